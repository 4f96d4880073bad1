"""``stickerconv serve``: the OpenAI-compatible chat API and the web chat page (docs/serving.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from stickerconv.cli.common import UserError, console
from stickerconv.serve.settings import MIB, ServeSettings

_DEFAULTS = ServeSettings()


def serve(
    responder: Annotated[
        str, typer.Option(help="text, tool (LLM baselines), pegs-ret, pegs-gen or pegs-rag (PEGS checkpoint).")
    ],
    stickers: Annotated[
        Path | None,
        typer.Option(help="Indexed sticker library: served, searched, matched (tool and pegs-* need one)."),
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="PEGS checkpoint folder (pegs-* responders).")] = None,
    generated_dir: Annotated[
        Path | None, typer.Option(help="Library folder for the stickers pegs-gen/pegs-rag paint; served too.")
    ] = None,
    uploads_dir: Annotated[
        Path | None,
        typer.Option(help="Library folder to keep users' uploaded images in (default: a temporary one per run)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: all interfaces).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="STICKERCONV_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*."),
    ] = None,
    llm: Annotated[str | None, typer.Option("--llm", help="local (default), local:/path.gguf or openai:MODEL.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="LLM config file; role 'responder'.")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="SQLite file of the LLM cache and ledger.")] = None,
    cache: Annotated[str | None, typer.Option(help="use, replay, refresh or off (default: off).")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model id clients send (default: stickerconv-RESPONDER).")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base URL for sticker links, e.g. behind a proxy (default: the request's).")
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser calls from this origin (repeatable; '*' any). Default: off.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Replies computed at once.")] = _DEFAULTS.concurrency,
    max_queue: Annotated[int, typer.Option(min=0, help="Requests waiting beyond that get 429.")] = _DEFAULTS.max_queue,
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="Largest request body, MiB.")] = (
        _DEFAULTS.max_body_bytes / MIB
    ),
    max_image_mb: Annotated[float, typer.Option(min=0.001, help="Largest image, MiB.")] = (
        _DEFAULTS.max_image_bytes / MIB
    ),
    max_messages: Annotated[int, typer.Option(min=1, help="Most messages in one request.")] = _DEFAULTS.max_messages,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a responder: OpenAI-compatible /v1/chat/completions with stickers, and a web chat at /."""
    import uvicorn

    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.responders import RESPONDERS, build_responder
    from stickerconv.serve import create_app
    from stickerconv.stickers.index import StickerIndex

    if responder not in RESPONDERS:
        raise UserError(f"unknown responder {responder!r}; choose from {', '.join(RESPONDERS)}")
    if responder in ("pegs-gen", "pegs-rag") and generated_dir is None:
        raise UserError(f"{responder} paints new stickers: give --generated-dir DIR, a folder to keep them in")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise UserError(f"unknown log level {log_level!r}; choose debug, info, warning or error")
    logging.getLogger("stickerconv").setLevel(log_level.upper())
    cfg = LLMConfig.load(config) if config else LLMConfig()
    overrides = {"llm": llm, "store": store, "cache": cache or ("off" if "cache" not in cfg.model_fields_set else None)}
    cfg = LLMConfig.model_validate(cfg.model_dump(exclude_unset=True) | {k: v for k, v in overrides.items() if v})
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
    index = StickerIndex.load(stickers) if stickers is not None else None
    chosen = build_responder(responder, LLMFactory(cfg), index, checkpoint=checkpoint, generated_dir=generated_dir)
    app = create_app(chosen, index, settings)
    where = f"http://{host}:{port}"
    console.print(
        f"serving [bold]{responder}[/] as model {settings.model_name or 'stickerconv-' + responder} "
        f"({len(index) if index else 0} stickers) on {where}  ·  web chat {where}/  ·  API {where}/v1"
        + ("  ·  bearer token required" if api_key else "")
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
