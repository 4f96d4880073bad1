"""Agent4SC simulation from Python: one options object for both executors (asyncio here, or shards over Ray).

The same work as ``stickerconv generate``: sessions into ``out``/conversations.jsonl, rejected.jsonl,
summary.json, the run's LLM cache ``out``/llm.sqlite, and the quality report in ``out``/quality/.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stickerconv.agent4sc.manager import MANAGER_RULES, ManagerConfig
from stickerconv.agent4sc.memory import MemoryConfig
from stickerconv.agent4sc.pattern import CALL_PATTERNS, CallPattern
from stickerconv.pipelines.common import PipelineError, ProgressFactory, check_choice, no_progress

if TYPE_CHECKING:
    from stickerconv.agent4sc.runner import RunReport
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.schema import Persona

log = logging.getLogger(__name__)

Executor = Literal["local", "ray"]
EXECUTORS: tuple[Executor, ...] = ("local", "ray")


@dataclass(frozen=True)
class GenerationOptions:
    """Everything ``run_generation`` and ``run_generation_ray`` take, for either executor. Fields a given
    executor does not use (``ray_address``, ``shards``, ``cpus_per_shard`` locally) are ignored by it.
    ``call_pattern`` and ``manager_rules`` are names from ``CALL_PATTERNS`` / ``MANAGER_RULES`` or objects."""

    personas: Path  # profiles, JSON/JSONL (the published format)
    stickers: Path  # an indexed sticker library
    out: Path  # the run folder; a rerun resumes
    llm: str | None = None
    config: Path | None = None
    cache: str | None = None
    executor: Executor = "local"
    concurrency: int = 4  # dialogues simulated at once (per shard under Ray)
    max_turns: int = 6
    limit: int | None = None  # only the first N personas
    seed: int = 0
    call_pattern: str | CallPattern = "lean"
    manager_rules: str | ManagerConfig = "default"
    memory: MemoryConfig | None = None
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray instance
    shards: int | None = None  # None: the cluster's CPUs / cpus_per_shard
    cpus_per_shard: float = 1.0

    def __post_init__(self) -> None:
        check_choice("executor", self.executor, EXECUTORS)
        if isinstance(self.call_pattern, str):
            check_choice("call_pattern", self.call_pattern, CALL_PATTERNS)
        if isinstance(self.manager_rules, str):
            check_choice("manager_rules", self.manager_rules, MANAGER_RULES)

    def llm_config(self) -> LLMConfig:
        """The run's LLM config: --config overlaid by the flags, the cache in the run folder, and enough
        concurrent calls for the dialogues unless the config file caps them."""
        from stickerconv.llm import LLMConfig

        config = LLMConfig.resolve(self.config, llm=self.llm, store=Path(self.out) / "llm.sqlite", cache=self.cache)
        if "concurrency" not in config.limits.model_fields_set:  # else the default of 4 calls would cap the sessions
            config.limits.concurrency = max(config.limits.concurrency, self.concurrency)
        return config

    def runner_options(self, on_progress: Callable[[int, int], None]) -> dict[str, Any]:
        """The keyword options both executors share, with registry names turned into their objects."""
        pattern = CALL_PATTERNS[self.call_pattern] if isinstance(self.call_pattern, str) else self.call_pattern
        rules = MANAGER_RULES[self.manager_rules] if isinstance(self.manager_rules, str) else self.manager_rules
        return {
            "concurrency": self.concurrency,
            "max_turns": self.max_turns,
            "limit": self.limit,
            "seed": self.seed,
            "memory_config": self.memory,
            "manager_config": rules,
            "call_pattern": pattern,
            "on_progress": on_progress,
        }


@dataclass(frozen=True)
class GenerationResult:
    """The run's report, its summary.json, and where the quality report went (None: no session yet)."""

    report: RunReport
    summary: dict[str, Any]
    conversations: Path
    quality: Path | None

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        return {
            "out": str(report.out),
            "kept": report.kept,
            "rejected": report.rejected,
            "skipped_done": report.skipped_done,
            "wall_s": round(report.wall_s, 2),
            "conversations": str(self.conversations),
            "quality": str(self.quality) if self.quality else None,
            "summary": self.summary,
        }


def generate(
    options: GenerationOptions, *, progress: ProgressFactory = no_progress, llm_factory: LLMFactory | None = None
) -> GenerationResult:
    """Simulate one dialogue per persona with the chosen executor and write the run folder's files.
    ``llm_factory`` (local executor only) replaces the one built from the options (tests script backends)."""
    from stickerconv.agent4sc.personas import load_personas
    from stickerconv.agent4sc.runner import run_generation
    from stickerconv.llm import LLMFactory
    from stickerconv.runfiles import CONVERSATIONS, SUMMARY
    from stickerconv.stickers.index import StickerIndex

    if llm_factory is not None and options.executor != "local":
        raise PipelineError("llm_factory: a factory cannot travel to Ray shards; use executor='local'")
    out = Path(options.out)
    index = StickerIndex.load(options.stickers)  # also checks the library before any shard starts
    llm_config = options.llm_config() if llm_factory is None else llm_factory.config
    people = load_personas(options.personas)
    with progress(f"simulating dialogues ({options.executor})") as update:
        if options.executor == "ray":
            report = _run_ray(options, people, llm_config, update)
        else:
            factory = llm_factory or LLMFactory(llm_config)
            report = asyncio.run(run_generation(people, index, factory, out, **options.runner_options(update)))
    summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    log.info("%d kept, %d rejected, %d already done in %s", report.kept, report.rejected, report.skipped_done, out)
    return GenerationResult(report, summary, out / CONVERSATIONS, _quality_report(out))


def _run_ray(
    options: GenerationOptions, people: list[Persona], llm_config: LLMConfig, update: Callable[[int, int], None]
) -> RunReport:
    try:
        from stickerconv.agent4sc.ray_executor import run_generation_ray
    except ImportError as exc:
        raise PipelineError(f"executor 'ray' needs Ray: pip install 'stickerconv[ray]' ({exc})") from None
    return run_generation_ray(
        people,
        Path(options.stickers),
        llm_config,
        Path(options.out),
        address=options.ray_address,
        shards=options.shards,
        cpus_per_shard=options.cpus_per_shard,
        **options.runner_options(update),
    )


def _quality_report(out: Path) -> Path | None:
    """The cheap quality figures of the whole run folder, refreshed on every run (resumed ones too)."""
    from stickerconv.runfiles import CONVERSATIONS

    if not (out / CONVERSATIONS).is_file():
        return None
    from stickerconv.evaluate.quality.metrics import dataset_quality
    from stickerconv.evaluate.quality.report import write_quality

    result = dataset_quality(out)
    return write_quality([result], [out.name], out / "quality") if result["sessions"] else None
