"""Annotating a sticker library with a vision model, callable from Python (``stickerconv stickers annotate``).

The pipeline chooses the models (flags, then the config file's roles ``sticker_vlm`` and
``sticker_knowledge``), refuses a text-only model as the vision model before anything loads, and runs the
library's three stages (``stickers/annotate.py``, method reference §3), which append to
``LIB_DIR/annotate/*.jsonl`` and update ``stickers.jsonl``. The LLM cache sits beside the library
(``LIB_DIR/annotate/llm.sqlite``) unless the flags or the config file name another, so a rerun continues.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from stickerconv.pipelines.common import PipelineError, ProgressFactory, no_progress
from stickerconv.stickers.annotate import ANNOTATE_DIR, AnnotateOptions

if TYPE_CHECKING:
    from stickerconv.llm import ChatModel, LLMConfig
    from stickerconv.stickers.annotate import Annotation

log = logging.getLogger(__name__)

VLM_ROLE, KNOWLEDGE_ROLE = "sticker_vlm", "sticker_knowledge"  # roles of an LLM config file
STORE_FILE = "llm.sqlite"  # in LIB_DIR/annotate/ unless a store is named
VISION_OPTIONS = """\
Options:
  --vlm openai:gpt-4o-mini                                     OpenAI (export OPENAI_API_KEY)
  --vlm openai:llava-hf/llava-1.5-7b-hf --base-url http://localhost:8000/v1
                                                               vLLM: vllm serve llava-hf/llava-1.5-7b-hf
                                                               (or Qwen/Qwen2.5-VL-7B-Instruct)
  --vlm openai:llava:13b --base-url http://localhost:11434/v1  Ollama: ollama pull llava:13b
  --config FILE with [roles.sticker_vlm] llm = "openai:MODEL"
Stickers that already have text (e.g. from `stickerconv stickers ingest --labels FILE`) and the
embedded emoji pack need no annotation. See docs/annotation.md."""


@dataclass(frozen=True)
class AnnotateLibraryOptions:
    """One annotation run: the library, its models, and the stages' own options (``AnnotateOptions``)."""

    library: Path  # sticker library folder (stickers.jsonl + images)
    vlm: str | None = None  # vision model of filter and captions (openai:MODEL); None: the config's sticker_vlm
    llm: str | None = None  # text model of the knowledge summary; None: the config's sticker_knowledge, else vlm
    base_url: str | None = None  # OpenAI-compatible server (else the config's, else OPENAI_BASE_URL)
    config: Path | None = None  # LLM config file (roles sticker_vlm, sticker_knowledge)
    store: Path | None = None  # cache + ledger; None: the config's, else LIB_DIR/annotate/llm.sqlite
    cache: str | None = None  # None: the config's ("use" by default)
    stages: AnnotateOptions = field(default_factory=AnnotateOptions)


@dataclass(frozen=True)
class AnnotationResult:
    """What a run did. ``report`` is the stages' report (also written to ``LIB_DIR/annotate/report.json``);
    it is None when nothing needed annotating, and ``skipped`` then says why."""

    library: Path
    report: dict[str, Any] | None = None
    skipped: Literal["emoji_pack", "complete"] | None = None


def annotate_library(options: AnnotateLibraryOptions, *, progress: ProgressFactory = no_progress) -> AnnotationResult:
    """Annotate ``options.library``; resumable, so the same call continues an interrupted run.

    Raises ``PipelineError`` when a stage needs a model that is not configured or cannot see images, and when
    the stages abort (the server keeps failing); what is done by then is kept."""
    from stickerconv.stickers.annotate import AnnotateAbort, Annotation, is_emoji_pack
    from stickerconv.stickers.library import StickerLibrary

    library = StickerLibrary.load(options.library)
    stages = dataclasses.replace(options.stages)  # the roles' sampling settings go in; the caller's stay
    annotation = Annotation(library, stages)
    if not annotation.targets:
        emoji = bool(library.stickers) and all(is_emoji_pack(s) for s in library)
        return AnnotationResult(options.library, skipped="emoji_pack" if emoji else "complete")
    config, vlm_spec, llm_spec = _models_config(options, annotation)
    stages.vlm_settings = stages.vlm_settings.model_copy(update=_overrides(config, VLM_ROLE))
    stages.knowledge_settings = stages.knowledge_settings.model_copy(update=_overrides(config, KNOWLEDGE_ROLE))
    try:
        report = asyncio.run(_run(annotation, config, vlm_spec, llm_spec, progress))
    except AnnotateAbort as exc:
        raise PipelineError(str(exc)) from None
    log.info("annotated %s: %d of %d sticker(s)", options.library, report["knowledge"]["done"], report["targets"])
    return AnnotationResult(options.library, report=report)


def _models_config(options: AnnotateLibraryOptions, annotation: Annotation) -> tuple[LLMConfig, str | None, str | None]:
    """The LLM config with both roles set, and their models; refuses a stage that would wait for a model."""
    from stickerconv.llm import LLMConfig

    config = LLMConfig.resolve(
        options.config,
        defaults={"store": options.library / ANNOTATE_DIR / STORE_FILE},
        store=options.store,
        cache=options.cache,
        base_url=options.base_url,
    )
    vlm_spec = options.vlm or _role_llm(config, VLM_ROLE)
    llm_spec = options.llm or _role_llm(config, KNOWLEDGE_ROLE) or vlm_spec
    if annotation.pending_images() and vlm_spec is None:
        raise PipelineError(
            f"no vision model configured: {len(annotation.pending_images())} sticker(s) in {options.library} need "
            "annotation, and annotating reads the images with a vision-language model served over an "
            f"OpenAI-compatible API.\n{VISION_OPTIONS}"
        )
    if annotation.pending_knowledge() and llm_spec is None:
        raise PipelineError(
            "captioned stickers wait for their knowledge summary: give a text model with --llm (or --vlm)"
        )
    config.roles[VLM_ROLE] = _role(config, VLM_ROLE, vlm_spec)
    config.roles[KNOWLEDGE_ROLE] = _role(config, KNOWLEDGE_ROLE, llm_spec)
    return config, vlm_spec, llm_spec


async def _run(
    annotation: Annotation, config: LLMConfig, vlm_spec: str | None, llm_spec: str | None, progress: ProgressFactory
) -> dict[str, Any]:
    """Build the models (the vision one only when images wait for it), run the stages, close the backends."""
    from stickerconv.llm import LLMFactory

    vlm_model: ChatModel | None = None
    if annotation.pending_images():
        assert vlm_spec is not None  # _models_config refused the run otherwise
        _check_vision(vlm_spec)
    factory = LLMFactory(config)
    bars = _StageProgress(progress)
    try:
        if annotation.pending_images():
            vlm_model = factory.chat_model(VLM_ROLE)
            if not vlm_model.backend.accepts_images:
                _refuse(vlm_spec, f"{vlm_model.backend.name}:{vlm_model.model}")
        llm_model = factory.chat_model(KNOWLEDGE_ROLE) if llm_spec else None
        return await annotation.run(vlm_model, llm_model, on_progress=bars)
    finally:
        bars.close()
        await factory.aclose()


class _StageProgress:
    """One progress display per stage, opened when the stage first reports (the stages report by name)."""

    def __init__(self, progress: ProgressFactory) -> None:
        self._progress, self._stack, self._stage, self._update = progress, ExitStack(), None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._stack.close()
            self._stack = ExitStack()
            self._update = self._stack.enter_context(self._progress(stage))
            self._stage = stage
        self._update(done, total)

    def close(self) -> None:
        self._stack.close()


def _check_vision(spec: str) -> None:
    """Refuse a text-only backend before it is built (the embedded model would load for nothing)."""
    from stickerconv.llm import parse_llm_spec

    if parse_llm_spec(spec)[0] == "local":
        from stickerconv.llm.backends.local import LocalBackend

        if not LocalBackend.accepts_images:
            _refuse(spec, "the embedded local model (SmolLM2)")


def _refuse(spec: str | None, what: str) -> NoReturn:
    raise PipelineError(
        f"--vlm {spec}: {what} is a text-only model and cannot see images; choose a vision model.\n{VISION_OPTIONS}"
    )


def _role_llm(config: LLMConfig, role: str) -> str | None:
    found = config.roles.get(role)
    return found.llm if found is not None else None


def _role(config: LLMConfig, role: str, spec: str | None):
    from stickerconv.llm.config import RoleConfig

    current = config.roles.get(role, RoleConfig())
    return current.model_copy(update={"llm": spec}) if spec else current


def _overrides(config: LLMConfig, role: str) -> dict[str, Any]:
    """Sampling settings a config file gives the role explicitly; the rest stay the method's (§2.2)."""
    found = config.roles.get(role)
    if found is None:
        return {}
    return found.model_dump(include={"temperature", "max_tokens", "top_p", "seed"}, exclude_none=True)
