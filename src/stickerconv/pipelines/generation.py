"""Agent4SC simulation from Python: one options object for both executors (asyncio here, or shards over Ray).

The same work as ``stickerconv generate``: sessions into ``out``/conversations.jsonl, rejected.jsonl,
summary.json, the run's LLM cache ``out``/llm.sqlite, and the quality report in ``out``/quality/. ``estimate``
(``generate --estimate``) says beforehand what the whole run will take in calls, tokens and cost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stickerconv.agent4sc.manager import MANAGER_RULES, ManagerConfig
from stickerconv.agent4sc.memory import MemoryConfig
from stickerconv.agent4sc.pattern import CALL_PATTERNS, CallPattern
from stickerconv.pipelines.common import PipelineError, ProgressFactory, check_choice, no_progress
from stickerconv.pipelines.pools import load_index, pool_provenance
from stickerconv.profiles import DEFAULT_PROFILE, PROFILES, Profile

if TYPE_CHECKING:
    from stickerconv.agent4sc.runner import RunReport
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.schema import Persona
    from stickerconv.stickers.index import StickerIndex

log = logging.getLogger(__name__)

Executor = Literal["local", "ray"]
EXECUTORS: tuple[Executor, ...] = ("local", "ray")
# Sessions an estimate simulates: session lengths vary with the persona (closure, repetition), so one is too
# few, and every one of them costs real calls on a hosted model.
ESTIMATE_PERSONAS = 3


@dataclass(frozen=True)
class GenerationOptions:
    """Everything ``run_generation`` and ``run_generation_ray`` take, for either executor. Fields a given
    executor does not use (``ray_address``, ``shards``, ``cpus_per_shard`` locally) are ignored by it.
    ``call_pattern`` and ``manager_rules`` are names from ``CALL_PATTERNS`` / ``MANAGER_RULES`` or objects.
    ``profile`` sets the call pattern, the manager's rules and the memory (each ``for_profile``) and the index's
    settings it requires (``IndexSettings.for_profile``); ``call_pattern``, ``manager_rules`` and ``memory``,
    when given, win over the profile's."""

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
    profile: Profile = DEFAULT_PROFILE
    call_pattern: str | CallPattern | None = None  # None: the profile's
    manager_rules: str | ManagerConfig | None = None  # None: the profile's
    memory: MemoryConfig | None = None  # None: the profile's
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray instance
    shards: int | None = None  # None: the cluster's CPUs / cpus_per_shard
    cpus_per_shard: float = 1.0
    pool: str | None = None  # retrieve only from this sticker pool (``stickers pools``); None: the whole library

    def __post_init__(self) -> None:
        check_choice("executor", self.executor, EXECUTORS)
        check_choice("profile", self.profile, PROFILES)
        if isinstance(self.call_pattern, str):
            check_choice("call_pattern", self.call_pattern, CALL_PATTERNS)
        if isinstance(self.manager_rules, str):
            check_choice("manager_rules", self.manager_rules, MANAGER_RULES)

    def llm_config(self) -> LLMConfig:
        """The run's LLM config: --config overlaid by the flags, the cache in the run folder, and enough
        concurrent calls for the dialogues unless the config file caps them.

        The embedded model keeps its prefix cache here unless the config file says otherwise: a session's calls
        repeat each agent's fixed text and the dialogue so far, and reusing them ran the lean pattern 1.81x as
        fast (bench/agent4sc.py embedded); a rerun replays from the response cache, so the run stays resumable."""
        from stickerconv.llm import LLMConfig

        store = Path(self.out) / "llm.sqlite"
        config = LLMConfig.resolve(
            self.config, defaults={"local_prefix_cache": True}, llm=self.llm, store=store, cache=self.cache
        )
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
            "memory_config": self.memory or MemoryConfig.for_profile(self.profile),
            "manager_config": rules or ManagerConfig.for_profile(self.profile),
            "call_pattern": pattern or CallPattern.for_profile(self.profile),
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

    if llm_factory is not None and options.executor != "local":
        raise PipelineError("llm_factory: a factory cannot travel to Ray shards; use executor='local'")
    out = Path(options.out)
    index = profile_index(load_index(options.stickers, options.pool), options.profile)  # before any shard starts
    llm_config = options.llm_config() if llm_factory is None else llm_factory.config
    people = load_personas(options.personas)
    provenance = {"profile": options.profile} | pool_provenance(options.pool)
    with progress(f"simulating dialogues ({options.executor})") as update:
        if options.executor == "ray":
            report = _run_ray(options, people, llm_config, update, provenance)
        else:
            factory = llm_factory or LLMFactory(llm_config)
            runner = options.runner_options(update) | {"provenance": provenance}
            report = asyncio.run(run_generation(people, index, factory, out, **runner))
    summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    log.info("%d kept, %d rejected, %d already done in %s", report.kept, report.rejected, report.skipped_done, out)
    return GenerationResult(report, summary, out / CONVERSATIONS, _quality_report(out))


def profile_index(index: StickerIndex, profile: Profile) -> StickerIndex:
    """``index``, if it embeds and ranks as ``profile`` does (``IndexSettings.for_profile``): the paper's run must
    not search an index built with our template or emotion bonus. The default profile takes any index."""
    from stickerconv.stickers.index import IndexSettings

    wanted = IndexSettings.for_profile(profile)
    if profile != DEFAULT_PROFILE and (index.template, index.emotion_weight) != astuple(wanted):
        raise PipelineError(
            f"the index of {index.library.root} embeds {index.template!r} texts with emotion bonus "
            f"{index.emotion_weight}; the {profile} profile searches {wanted.template!r} texts with bonus "
            f"{wanted.emotion_weight}: rebuild it with `stickerconv stickers index {index.library.root} "
            f"--profile {profile}`"
        )
    return index


def _run_ray(
    options: GenerationOptions,
    people: list[Persona],
    llm_config: LLMConfig,
    update: Callable[[int, int], None],
    provenance: dict[str, str],
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
        pool=options.pool,
        provenance=provenance,
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


@dataclass(frozen=True)
class GenerationEstimate:
    """What a whole run is expected to take, scaled from a few sessions simulated on the configured model.

    ``per_session`` and ``total`` have the fields of a ledger total (``llm.store.ledger_total``): calls (those
    answered by the response cache counted in ``cached``), prompt tokens, the part the server reported as
    cached and the uncached rest, completion tokens and the cost in USD (None when a model has no price)."""

    sessions: int  # sessions the run would simulate: the persona file's, after --limit
    sampled: int  # sessions simulated for the estimate
    sample_kept: int  # of those, how many were kept (had a sticker)
    sample_wall_s: float
    models: list[str]  # backend:model of every model the sample called
    unpriced: list[str]  # the models among them without a price in the LLM config
    per_session: dict[str, Any]
    total: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    options: GenerationOptions,
    *,
    personas: int = ESTIMATE_PERSONAS,
    progress: ProgressFactory = no_progress,
    llm_factory: LLMFactory | None = None,
) -> GenerationEstimate:
    """Simulate ``personas`` sessions, spread over the persona file, into a temporary folder with a fresh LLM
    cache of their own, and scale their ledger to every session the run would simulate. Nothing is written to
    ``options.out``, and the run's cache neither answers the sample nor keeps its answers. Whatever the
    executor, the sample runs here: a session makes the same calls under Ray. ``llm_factory`` (tests) replaces
    the one built from the options and should be fresh: its whole ledger is read as the sample's."""
    from stickerconv.agent4sc.personas import load_personas
    from stickerconv.agent4sc.runner import run_generation
    from stickerconv.llm import LLMFactory
    from stickerconv.llm.store import LEDGER_SUMS, ledger_total

    if personas < 1:
        raise PipelineError(f"--estimate-personas {personas}: simulate at least one session")
    people = load_personas(options.personas)[: options.limit or None]
    if not people:
        raise PipelineError(f"{options.personas}: no personas to estimate for")
    count = min(personas, len(people))
    positions = [i * len(people) // count for i in range(count)]  # spread: the file may be sorted by emotion
    index = profile_index(load_index(options.stickers, options.pool), options.profile)
    with tempfile.TemporaryDirectory(prefix="stickerconv-estimate-") as folder:
        config = options.llm_config().model_copy(update={"store": Path(folder) / "llm.sqlite", "cache": "use"})
        factory = llm_factory or LLMFactory(config)
        start = time.perf_counter()
        with progress(f"estimating from {count} simulated session(s)") as update:
            runner = options.runner_options(update) | {"concurrency": min(options.concurrency, count), "limit": None}
            sample = [people[i] for i in positions]
            report = asyncio.run(
                run_generation(sample, index, factory, Path(folder) / "run", positions=positions, **runner)
            )
        rows = [asdict(row) for row in factory.store.ledger()]
        if llm_factory is None:
            factory.store.close()  # before its folder goes
    sampled = ledger_total(rows)
    cost = sampled["cost_usd"]
    per_session = {name: sampled[name] / count for name in LEDGER_SUMS}
    per_session["cost_usd"] = None if cost is None else cost / count
    total = {name: round(per_session[name] * len(people)) for name in LEDGER_SUMS}
    total["cost_usd"] = None if cost is None else cost / count * len(people)
    return GenerationEstimate(
        sessions=len(people),
        sampled=count,
        sample_kept=report.kept,
        sample_wall_s=round(time.perf_counter() - start, 2),
        models=sorted({f"{row['backend']}:{row['model']}" for row in rows}),
        unpriced=sorted({f"{row['backend']}:{row['model']}" for row in rows if row["cost_usd"] is None}),
        per_session=per_session,
        total=total,
    )
