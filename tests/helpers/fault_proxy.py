"""An HTTP proxy that puts faults between a client and a real OpenAI-compatible server.

Why: the fake server injects faults into answers it makes up; a real server (llama.cpp's) never fails on
purpose. Placed in front of it, this proxy forwards every request and, for a seeded share of chat
completions, answers with 429, 500 or 503 instead, delays the answer (a stall), cuts the body in half or
sends garbage bytes. The injected errors never name ``response_format``, so the client must treat them as
transient failures and never as a refusal of its structured-output mode. Runs uvicorn in a daemon thread.

With ``reset=True`` the proxy also makes llama.cpp's answers depend on the request alone. llama-cpp-python's
server keeps the KV cache of its last prompt and evaluates only the part of the next prompt that differs; the
split changes the arithmetic slightly, so the same request with the same seed can get another answer after
different predecessors (seen with SmolLM2: one DraftedMessage, four histories, two answers). Unseeded calls
also inherit their seed from the previous one. So the proxy lets one chat completion at a time through and
follows each with a one-token raw completion, seeded, whose prompt shares no token with a chat prompt: every
request then starts from an empty KV cache and the same seed state, as on a fresh server.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from stickerconv.serve.runner import ServerThread

PROXY_FAULTS = ("429", "500", "503", "stall", "truncated", "garbage")
_ERRORS = {
    "429": {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
    "500": {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}},
    "503": {"error": {"message": "The server is overloaded", "type": "server_error", "param": None, "code": None}},
}
RESET_COMPLETION = {"prompt": "\n", "max_tokens": 1, "temperature": 0.0, "seed": 0}  # see the module docstring
GARBAGE = b'\x8b\x00\xff{"id": \xfe\xfd not json'
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "host", "content-encoding"}


@dataclass(frozen=True)
class ProxyFaults:
    """What to inject; drawn from ``random.Random(seed)`` in arrival order."""

    rate: float = 0.3
    kinds: tuple[str, ...] = PROXY_FAULTS
    stall_seconds: float = 1.5  # a stalled answer arrives this much later
    seed: int = 0


class FaultProxy:
    """Forwards ``/v1/...`` to ``upstream`` (a base URL ending in /v1), injecting ``faults`` into chat completions.

    ``injected`` counts the faults by kind; ``forwarded`` counts the requests that reached the upstream."""

    def __init__(self, upstream: str, faults: ProxyFaults | None = None, *, reset: bool = False):
        self.upstream = upstream.rstrip("/")
        self.faults = faults or ProxyFaults()
        self.reset = reset
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.base_url = ""
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._serial = asyncio.Lock()  # bound to the server's event loop on first use
        self._runner: ServerThread | None = None
        self.app = self._build_app()

    def _draw(self) -> str | None:
        with self._lock:
            if self._rng.random() >= self.faults.rate:
                return None
            fault = self._rng.choice(self.faults.kinds)
            self.injected[fault] += 1
            return fault

    async def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """One upstream call; in reset mode a chat completion goes alone and is followed by the reset completion."""
        url = f"{self.upstream}/{path}"
        async with httpx.AsyncClient(timeout=None) as client:
            if not (self.reset and path == "chat/completions"):
                return await client.request(method, url, content=body, headers=headers)
            async with self._serial:
                response = await client.request(method, url, content=body, headers=headers)
                await client.post(f"{self.upstream}/completions", json=RESET_COMPLETION)
                return response

    async def _forward(self, request: Request, path: str) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        # Shielded: a client killed mid-request must not cut the exchange between the answer and the reset.
        upstream = await asyncio.shield(self._exchange(request.method, path, await request.body(), headers))
        with self._lock:
            self.forwarded += 1
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)

    async def _handle(self, request: Request, path: str) -> Response:
        fault = self._draw() if path == "chat/completions" and request.method == "POST" else None
        if fault in _ERRORS:
            headers = {"Retry-After": "0"} if fault == "429" else None
            return JSONResponse(_ERRORS[fault], status_code=int(fault), headers=headers)
        if fault == "garbage":
            return Response(GARBAGE, media_type="application/json")
        if fault == "stall":
            await asyncio.sleep(self.faults.stall_seconds)
        response = await self._forward(request, path)
        if fault == "truncated":
            return Response(response.body[: len(response.body) // 2], media_type="application/json")
        return response

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        app.api_route("/v1/{path:path}", methods=["GET", "POST"])(self._handle)
        return app

    def start(self) -> FaultProxy:
        self._runner = ServerThread(self.app).start(timeout=10)
        self.base_url = f"{self._runner.url}/v1"
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()
        self._runner = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
