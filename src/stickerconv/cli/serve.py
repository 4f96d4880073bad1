"""``stickerconv serve``: the OpenAI-compatible chat API and the web chat page (docs/serving.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from stickerconv.cli.common import (
    CacheOption,
    ConfigOption,
    LLMOption,
    StickersOption,
    StoreOption,
    UserError,
    console,
)
from stickerconv.pipelines.serving import DEFAULT_HOST, DEFAULT_LOG_LEVEL, DEFAULT_PORT, LOG_LEVELS, ServeOptions
from stickerconv.serve.settings import MIB, ServeSettings

_DEFAULTS = ServeSettings()
# The command's own options, named here so that the signature below reads as the list of flags.
_Responder = Annotated[
    str, typer.Option(help="text, tool (LLM baselines), pegs-ret, pegs-gen or pegs-rag (PEGS checkpoint).")
]
_Checkpoint = Annotated[Path | None, typer.Option(help="PEGS checkpoint folder (pegs-* responders).")]
_GeneratedDir = Annotated[
    Path | None, typer.Option(help="Library folder for the stickers pegs-gen/pegs-rag paint; served too.")
]
_UploadsDir = Annotated[
    Path | None,
    typer.Option(help="Library folder to keep users' uploaded images in (default: a temporary one per run)."),
]
_Host = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: all interfaces).")]
_Port = Annotated[int, typer.Option(min=0, max=65535)]
_ApiKey = Annotated[
    str | None, typer.Option(envvar="STICKERCONV_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*.")
]
_ModelName = Annotated[str | None, typer.Option(help="Model id clients send (default: stickerconv-RESPONDER).")]
_PublicUrl = Annotated[
    str | None, typer.Option(help="Base URL for sticker links, e.g. behind a proxy (default: the request's).")
]
_CorsOrigin = Annotated[
    list[str] | None, typer.Option(help="Allow browser calls from this origin (repeatable; '*' any). Default: off.")
]
_Concurrency = Annotated[int, typer.Option(min=1, help="Replies computed at once.")]
_MaxQueue = Annotated[int, typer.Option(min=0, help="Requests waiting beyond that get 429.")]
_MaxBodyMb = Annotated[float, typer.Option(min=0.01, help="Largest request body, MiB.")]
_MaxImageMb = Annotated[float, typer.Option(min=0.001, help="Largest image, MiB.")]
_MaxMessages = Annotated[int, typer.Option(min=1, help="Most messages in one request.")]
_LogLevel = Annotated[str, typer.Option(help=f"{', '.join(LOG_LEVELS)}.")]


def serve(
    responder: _Responder,
    stickers: StickersOption = None,
    checkpoint: _Checkpoint = None,
    generated_dir: _GeneratedDir = _DEFAULTS.generated_dir,
    uploads_dir: _UploadsDir = _DEFAULTS.uploads_dir,
    host: _Host = DEFAULT_HOST,
    port: _Port = DEFAULT_PORT,
    api_key: _ApiKey = _DEFAULTS.api_key,
    llm: LLMOption = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    cache: CacheOption = None,
    model_name: _ModelName = _DEFAULTS.model_name,
    public_url: _PublicUrl = _DEFAULTS.public_url,
    cors_origin: _CorsOrigin = None,
    concurrency: _Concurrency = _DEFAULTS.concurrency,
    max_queue: _MaxQueue = _DEFAULTS.max_queue,
    max_body_mb: _MaxBodyMb = _DEFAULTS.max_body_bytes / MIB,
    max_image_mb: _MaxImageMb = _DEFAULTS.max_image_bytes / MIB,
    max_messages: _MaxMessages = _DEFAULTS.max_messages,
    log_level: _LogLevel = DEFAULT_LOG_LEVEL,
) -> None:
    """Serve a responder: OpenAI-compatible /v1/chat/completions with stickers, and a web chat at /.

    The LLM baselines take the config's role 'responder'; the cache is off unless the config file sets it."""
    from stickerconv.pipelines.serving import build_app, run_app, summary

    if log_level.lower() not in LOG_LEVELS:
        raise UserError(f"--log-level {log_level!r}: unknown log level; choose from {', '.join(LOG_LEVELS)}")
    logging.getLogger("stickerconv").setLevel(log_level.upper())  # before the responder's model loads
    try:
        settings = ServeSettings(
            model_name=model_name,
            generated_dir=generated_dir,
            uploads_dir=uploads_dir,
            api_key=api_key or None,
            cors_origins=cors_origin or [],
            public_url=public_url,
            concurrency=concurrency,
            max_queue=max_queue,
            max_body_bytes=int(max_body_mb * MIB),
            max_image_bytes=int(max_image_mb * MIB),
            max_messages=max_messages,
        )
    except ValidationError as exc:  # checked before the responder's model loads
        raise UserError("; ".join(e["msg"] for e in exc.errors())) from None
    llm_options = {"llm": llm, "config": config, "store": store, "cache": cache}
    app = build_app(
        ServeOptions(responder=responder, stickers=stickers, checkpoint=checkpoint, settings=settings, **llm_options)
    )
    console.print(summary(app, host, port))
    run_app(app, host, port, log_level)
