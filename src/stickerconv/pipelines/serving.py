"""Serving a responder: everything ``stickerconv serve`` does before uvicorn listens, callable from Python.

``build_app(ServeOptions(...))`` resolves the LLM config, loads the sticker library, builds the responder and
returns the FastAPI app (docs/serving.md); ``run_app`` then listens on a port. The command and the demo call
these two, so both serve the same way; a notebook or a test can take the app into ``TestClient`` or
``ServerThread`` instead of listening.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from stickerconv.pipelines.common import PipelineError
from stickerconv.serve.settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stickerconv.llm import LLMFactory

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")  # the server's and uvicorn's log levels
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_LOG_LEVEL = "127.0.0.1", 8000, "info"
PAINTERS = ("pegs-gen", "pegs-rag")  # responders that add stickers to a library folder of their own


class ServeOptions(BaseModel):
    """What to serve and with which models; ``settings`` holds what the operator sets (auth, CORS, limits,
    the painted and uploaded stickers' folders), with its defaults (``ServeSettings``)."""

    model_config = ConfigDict(extra="forbid")

    responder: str  # one of stickerconv.responders.RESPONDERS
    stickers: Path | None = None  # indexed library: served, searched, matched (tool and pegs-* need one)
    checkpoint: Path | None = None  # PEGS checkpoint folder (pegs-* responders)
    llm: str | None = None  # --llm selector of the LLM baselines; None: the config's
    config: Path | None = None  # LLM config file; the responder's model is role "responder"
    store: Path | None = None  # SQLite file of the LLM cache and ledger
    cache: str | None = None  # None: the config file's, else "off" (a chat server should not replay answers)
    settings: ServeSettings = Field(default_factory=ServeSettings)


def build_app(options: ServeOptions, *, factory: LLMFactory | None = None) -> FastAPI:
    """The app ``stickerconv serve`` runs: the responder named by ``options`` over its library.

    ``factory`` replaces the one built from the LLM options (tests and notebooks bring their own backends).
    Raises ``PipelineError`` for an unknown responder or a painter without ``settings.generated_dir``, and
    ``ResponderError`` when the responder lacks what it needs (a library, a checkpoint)."""
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.responders import RESPONDERS, build_responder
    from stickerconv.serve import create_app
    from stickerconv.stickers.index import StickerIndex

    name = options.responder
    if name not in RESPONDERS:
        raise PipelineError(f"unknown responder {name!r}; choose from {', '.join(RESPONDERS)}")
    generated = options.settings.generated_dir
    if name in PAINTERS and generated is None:
        raise PipelineError(
            f"{name} paints new stickers: give --generated-dir DIR (settings.generated_dir), a folder to keep them in"
        )
    if factory is None:
        config = LLMConfig.resolve(
            options.config, defaults={"cache": "off"}, llm=options.llm, store=options.store, cache=options.cache
        )
        factory = LLMFactory(config)
    index = StickerIndex.load(options.stickers) if options.stickers is not None else None
    chosen = build_responder(name, factory, index, checkpoint=options.checkpoint, generated_dir=generated)
    log.info("serving %s over %s", name, options.stickers or "no library")
    return create_app(chosen, index, options.settings)


def summary(app: FastAPI, host: str, port: int) -> str:
    """One line for the operator: what answers as which model, over how many stickers, and where."""
    state, where = app.state, f"http://{host}:{port}"
    index = state.catalog.index
    return (
        f"serving {state.responder.name} as model {state.model_name} ({len(index) if index else 0} stickers) on "
        f"{where}  ·  web chat {where}/  ·  API {where}/v1"
        + ("  ·  bearer token required" if state.settings.api_key else "")
    )


def run_app(
    app: FastAPI, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = DEFAULT_LOG_LEVEL
) -> None:
    """Listen until interrupted. ``log_level`` (one of ``LOG_LEVELS``) is uvicorn's and the ``stickerconv``
    logger's, so that every caller's server logs its chats the same way."""
    import uvicorn

    if log_level.lower() not in LOG_LEVELS:
        raise PipelineError(f"unknown log level {log_level!r}; choose from {', '.join(LOG_LEVELS)}")
    logging.getLogger("stickerconv").setLevel(log_level.upper())
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
