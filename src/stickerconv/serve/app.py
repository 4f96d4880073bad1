"""The StickerConv server: an OpenAI-compatible chat API over any ``Responder``, the library's sticker
images, a sticker search, and a web chat page, in one FastAPI app.

    GET  /v1/models                    the one model this server answers as
    POST /v1/chat/completions          OpenAI chat completions, streaming (SSE) or not
    GET  /v1/stickers/search?q=&k=     library stickers for a query (the web page's picker)
    GET  /stickers/{id}                a library sticker's image
    GET  /                             the web chat page (static files under /ui/)

``create_app(responder, index, settings)`` builds it; ``pipelines.serving.build_app`` makes the responder from
options and calls it for ``stickerconv serve`` and the demo, which run the app with uvicorn. The wire
conventions (the ``send_sticker`` call, image parts, errors, limits) are in docs/serving.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stickerconv import __version__
from stickerconv.llm import LLMError
from stickerconv.responders import Responder
from stickerconv.schema import EmotionLabel, Reply
from stickerconv.serve.dialogue import reply_message, text_pieces, to_context
from stickerconv.serve.errors import APIError, error_response, install_error_handlers
from stickerconv.serve.openai_schema import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    StickerList,
    ToolCallDelta,
)
from stickerconv.serve.settings import ServeSettings
from stickerconv.serve.stickers import MEDIA_TYPES, StickerCatalog
from stickerconv.stickers.index import StickerIndex

log = logging.getLogger("stickerconv.serve")
UI_DIR = Path(__file__).parent / "ui"
CHAT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
}


class BodyLimit:
    """Reads a request body whole, up to ``limit`` bytes, before the app sees it; more is a 413.

    A raw ASGI middleware, so that a huge body is refused by its Content-Length before it is read, and a
    chunked one as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "invalid Content-Length header")(scope, receive, send)
                return
            if int(declared) > self.limit:
                await self._too_large(scope, receive, send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # the disconnect, for streaming responses that listen for it

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"the request body is larger than {self.limit} bytes", code="body_too_large")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class Gate:
    """At most ``slots`` responder calls at once and ``max_queue`` waiting; beyond that, 429."""

    def __init__(self, slots: int, max_queue: int):
        self.slots, self.max_queue = slots, max_queue
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # one semaphore per event loop (tests run apps on several)
            self._semaphore, self._loop = asyncio.Semaphore(self.slots), loop
        assert self._semaphore is not None
        if self._semaphore.locked() and self.waiting >= self.max_queue:
            raise APIError(
                429,
                f"the server is busy ({self.slots} replies running, {self.waiting} waiting); retry shortly",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._semaphore.release()


def _base_url(request: Request) -> str:
    return request.app.state.settings.public_url or str(request.base_url)


async def _authorize(request: Request) -> None:
    api_key = request.app.state.settings.api_key
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise APIError(401, "missing API key: send 'Authorization: Bearer KEY'", code="missing_api_key")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "invalid API key", code="invalid_api_key")


api = APIRouter(prefix="/v1", dependencies=[Depends(_authorize)])
pages = APIRouter()


@api.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    state = request.app.state
    return ModelList(data=[ModelCard(id=state.model_name, created=state.created)])


@api.post("/chat/completions", response_model=ChatCompletion, openapi_extra={"requestBody": CHAT_BODY})
async def chat_completions(request: Request) -> Any:
    started = time.perf_counter()
    state = request.app.state
    model_name, catalog = state.model_name, state.catalog
    body = _parse(await request.body())
    if body.model != model_name:
        raise APIError(
            404,
            f"unknown model {body.model[:100]!r}; this server answers as {model_name!r}",
            "model",
            "model_not_found",
        )
    context = await asyncio.to_thread(to_context, body, catalog, state.settings)
    async with state.gate.slot():
        try:
            reply = await state.responder.respond(context)
        except LLMError as exc:
            raise APIError(502, f"the responder's model failed: {exc}", code="responder_error") from None
    message = reply_message(reply, catalog, _base_url(request))
    log.info(
        "chat: %d message(s), user sticker %s -> %d chars, sticker %s, %.2fs",
        len(body.messages),
        context.user_sticker.id if context.user_sticker else "-",
        len(reply.text),
        reply.sticker.id if reply.sticker else "-",
        time.perf_counter() - started,
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return StreamingResponse(
            _events(completion_id, model_name, reply, message),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    completion = ChatCompletion(
        id=completion_id, created=int(time.time()), model=model_name, choices=[Choice(message=message)]
    )
    return JSONResponse(completion.wire())


@api.get("/stickers/search", response_model=StickerList)
async def search_stickers(
    request: Request,
    q: Annotated[str, Query(max_length=500, description="what the sticker should express; empty lists some")] = "",
    k: Annotated[int, Query(ge=1, description="how many stickers")] = 24,
    label: Annotated[EmotionLabel | None, Query(description="only stickers of this emotion label")] = None,
) -> StickerList:
    state = request.app.state
    if k > state.settings.max_search_k:
        raise APIError(400, f"k must be at most {state.settings.max_search_k}", param="k", code="invalid_value")
    hits = await asyncio.to_thread(state.catalog.search, q, k, label, _base_url(request))
    return StickerList(data=hits)


@pages.get("/stickers/{sticker_id:path}", response_class=FileResponse)
async def sticker_image(request: Request, sticker_id: str) -> FileResponse:
    path = request.app.state.catalog.image_file(sticker_id) if len(sticker_id) <= 512 else None
    if path is None:
        raise APIError(404, f"unknown sticker {sticker_id[:200]!r}", param="sticker_id", code="unknown_sticker")
    media_type = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})


@pages.get("/healthz", include_in_schema=False)
async def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "model": request.app.state.model_name}


@pages.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html")


def create_app(
    responder: Responder, index: StickerIndex | None = None, settings: ServeSettings | None = None
) -> FastAPI:
    """The server for ``responder``; ``index`` (its library) serves and resolves stickers.

    The routes are module-level and read what they serve from ``app.state``, so one app's state is all there
    is to a server (tests and ``stickerconv serve`` inspect it)."""
    settings = settings or ServeSettings()
    app = FastAPI(
        title="StickerConv",
        version=__version__,
        description="OpenAI-compatible empathetic chat with stickers (see docs/serving.md).",
        redoc_url=None,
    )
    app.state.settings, app.state.responder = settings, responder
    app.state.catalog = StickerCatalog(index, settings)
    app.state.model_name = settings.model_name or f"stickerconv-{responder.name}"
    app.state.gate = Gate(settings.concurrency, settings.max_queue)
    app.state.created = int(time.time())
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(api)
    app.include_router(pages)
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
    _document_chat_body(app)
    return app


def _parse(raw: bytes) -> ChatCompletionRequest:
    """The request body, parsed here rather than by FastAPI so that every broken body is a 400."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}"[:300], code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = max(errors, key=lambda e: len(e["loc"]))  # the deepest is the most specific of a union's tries
        param = _param(first["loc"])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise APIError(400, f"{param or 'body'}: {first['msg']}{more}", param=param, code="invalid_value") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply", code="invalid_json") from None


_TAGS = {"system", "developer", "user", "assistant", "tool", "text", "image_url"}


def _param(loc: tuple) -> str | None:
    """pydantic's error location as OpenAI names a parameter: ``messages[0].content[1].image_url.url``.

    Union members (``str``, ``list[...]``) and the tags of the role and content-part unions that pydantic
    puts into the location are left out."""
    out, after_index_of = "", None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if after_index_of in ("messages", "content") and part in _TAGS:
            after_index_of = None
            continue
        if "[" in part or part in ("str", "int", "float", "bool", "dict", "list", "none"):
            continue
        after_index_of = part
        out += f".{part}" if out else part
    return out or None


async def _events(completion_id: str, model: str, reply: Reply, message: Any) -> AsyncIterator[str]:
    """SSE chunks: the role, the text in pieces, the ``send_sticker`` call, the finish, then [DONE]."""
    created = int(time.time())

    def chunk(delta: Delta, finish: str | None = None) -> str:
        data = ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=[ChunkChoice(delta=delta, finish_reason=finish)]
        )
        return f"data: {json.dumps(data.wire(), ensure_ascii=False)}\n\n"

    yield chunk(Delta(role="assistant", content=""))
    for piece in text_pieces(reply.text):
        yield chunk(Delta(content=piece))
    for i, call in enumerate(message.tool_calls or []):
        yield chunk(Delta(tool_calls=[ToolCallDelta(index=i, id=call.id, function=call.function)]))
    yield chunk(Delta(), finish="stop")
    yield "data: [DONE]\n\n"


def _document_chat_body(app: FastAPI) -> None:
    """Put the request model into the OpenAPI schema (the endpoint parses its body itself)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            defs = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["ChatRequest"] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
