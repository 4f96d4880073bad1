"""Choosing models: the ``--llm`` selector every command shares, and a config file for per-role models.

``--llm local`` (default) is the embedded SmolLM2; ``--llm local:/path/model.gguf`` another GGUF;
``--llm openai:MODEL`` any OpenAI-compatible server (base URL and key from the config, the
options, or OPENAI_BASE_URL / OPENAI_API_KEY). A TOML or JSON file can give each role (user agent,
assistant agent, manager, judge, ...) its own model and sampling settings:

    llm = "local"
    store = "runs/llm.sqlite"
    structured_output = "auto"   # or json_schema, json_object_schema, json_object, prompt
    local_prefix_cache = false   # true: the embedded model keeps its KV cache between calls (faster)
    [limits]
    concurrency = 8
    rpm = 500
    [prices."gpt-4o-mini"]
    input_per_mtok = 0.15
    output_per_mtok = 0.60
    cached_input_per_mtok = 0.075   # prompt tokens the server had cached; unset: the input price
    [roles.judge]
    llm = "openai:gpt-4o-mini"
    temperature = 0.7
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stickerconv.llm.backends import Backend
from stickerconv.llm.chat import CacheMode, ChatModel
from stickerconv.llm.policy import Limits, RateLimiter, RetryPolicy
from stickerconv.llm.store import LLMStore, Price
from stickerconv.llm.types import ConfigError, Settings, StructuredOutput

DEFAULT_LLM = "local"
LLM_FORMS = "'local', 'local:/path/to/model.gguf' or 'openai:MODEL_NAME'"


class RoleConfig(BaseModel):
    """A role's model and sampling settings; unset fields fall back to the top level."""

    model_config = ConfigDict(extra="forbid")
    llm: str | None = None
    base_url: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    structured_output: StructuredOutput | None = None


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    llm: str = DEFAULT_LLM
    base_url: str | None = None
    # How JSON schemas reach OpenAI-compatible servers: "auto" negotiates once per server (llm/structured.py);
    # a mode pins it. The embedded model always takes them as a grammar.
    structured_output: StructuredOutput = "auto"
    # The embedded model keeps its KV cache between calls and evaluates only the new part of each prompt: faster,
    # but an answer may then depend on the call before it (LocalBackend explains).
    local_prefix_cache: bool = False
    api_key_env: str = "OPENAI_API_KEY"
    cache: CacheMode = "use"
    store: Path | None = None  # SQLite file of cache + ledger; None keeps them in memory
    settings: Settings = Settings()
    retry: RetryPolicy = RetryPolicy()
    limits: Limits = Limits()
    prices: dict[str, Price] = {}
    roles: dict[str, RoleConfig] = {}

    @classmethod
    def load(cls, path: Path | str) -> LLMConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except FileNotFoundError:
            raise ConfigError(f"LLM config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
        return cls._validated(data, f"{path}: ")

    @classmethod
    def resolve(
        cls, config_file: Path | str | None = None, *, defaults: dict[str, Any] | None = None, **flags: Any
    ) -> LLMConfig:
        """The one overlay rule of every command: flags given (not None) win over the file's values, which win
        over the command's own ``defaults`` (say, a cache file beside the library), which win over the class's.

        Keeping it in one place is what stops commands from disagreeing on whether an empty flag or a file's
        explicit value counts."""
        base = cls.load(config_file) if config_file else cls()
        data = (defaults or {}) | base.model_dump(exclude_unset=True)
        data |= {key: value for key, value in flags.items() if value is not None}
        return cls._validated(data, "")

    @classmethod
    def _validated(cls, data: dict[str, Any], origin: str) -> LLMConfig:
        """A config, or a ConfigError naming the first bad field (and the file it came from) and its value."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{origin}{where}: {err['msg']} (got {err.get('input')!r})") from None


def parse_llm_spec(spec: str) -> tuple[str, str | None]:
    """``local`` -> ("local", None); ``local:PATH`` -> ("local", PATH); ``openai:MODEL`` -> ("openai", MODEL)."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "local":
        return "local", arg or None
    if kind == "openai" and arg:
        return "openai", arg
    raise ConfigError(f"unknown LLM {spec!r}; use {LLM_FORMS}")


class LLMFactory:
    """Builds ChatModels for roles, sharing one backend per model (the local model loads once, and what
    an OpenAI-compatible server taught about structured output is learnt once), one rate limiter per
    backend and one store (cache + ledger) for all."""

    def __init__(self, config: LLMConfig | None = None, *, llm: str | None = None, cache: CacheMode | None = None):
        self.config = config or LLMConfig()
        if llm is not None:
            self.config = self.config.model_copy(update={"llm": llm})
        if cache is not None:
            self.config = self.config.model_copy(update={"cache": cache})
        self.store = LLMStore(self.config.store or ":memory:")
        self._backends: dict[tuple[str, str | None], tuple[Backend, RateLimiter]] = {}

    def backend(self, spec: str, base_url: str | None = None) -> tuple[Backend, RateLimiter]:
        key = (spec, base_url)
        if key not in self._backends:
            kind, arg = parse_llm_spec(spec)
            if kind == "local":
                from stickerconv.llm.backends.local import LocalBackend

                backend: Backend = LocalBackend(arg, prefix_cache=self.config.local_prefix_cache)
            else:
                from stickerconv.llm.backends.openai_compat import OpenAICompatBackend

                backend = OpenAICompatBackend(arg, base_url=base_url, api_key=os.environ.get(self.config.api_key_env))
            self._backends[key] = (backend, RateLimiter(self.config.limits))
        return self._backends[key]

    def register_backend(self, spec: str, backend: Backend, base_url: str | None = None) -> None:
        """Serve ``spec`` with an existing backend object (an in-process server, a test double)."""
        self._backends[(spec, base_url)] = (backend, RateLimiter(self.config.limits))

    def chat_model(self, role: str = "default") -> ChatModel:
        cfg = self.config
        role_cfg = cfg.roles.get(role, RoleConfig())
        overrides = role_cfg.model_dump(include={"temperature", "max_tokens", "top_p", "seed"}, exclude_none=True)
        backend, limiter = self.backend(role_cfg.llm or cfg.llm, role_cfg.base_url or cfg.base_url)
        return ChatModel(
            backend,
            store=self.store,
            cache=cfg.cache,
            role=role,
            settings=cfg.settings.model_copy(update=overrides),
            retry=cfg.retry,
            limiter=limiter,
            prices=cfg.prices,
            structured_output=role_cfg.structured_output or cfg.structured_output,
        )

    async def aclose(self) -> None:
        for backend, _ in self._backends.values():
            await backend.aclose()
        self._backends.clear()
