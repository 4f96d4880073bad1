"""The demo from Python: from nothing to a trained, evaluated sticker chat, on the embedded defaults or on the
user's model.

``run_demo(DemoOptions(...))`` runs six steps, each one pipeline call as a user would run the commands one by
one: the default pack and its index, personas, Agent4SC sessions, the dataset (statistics, split, samples),
PEGS training, and the evaluation of the two LLM baselines and PEGS. Each step is cached: ``demo-state.json`` in
the run folder records a key per step (its options, the model of an LLM step, and the keys of the steps it
reads), so a second run skips what is done, an interrupted step resumes (the pipelines it calls are
resumable), and a step whose options or model changed is redone from scratch together with every step after it.

PEGS's stages that read only the sticker library (vision, perception, retrieval, generation) do not wait for
the dialogues: they run in a second process while the sessions are simulated (:class:`Alignment`), on the core
the embedded model leaves idle, and the PEGS step adopts what they built.

What a step logs goes to ``logs/<step>.log``; ``on_step`` hears each step start and finish with the rows it
shows (read back from the step's files, so a cached step shows its result too), and ``REPORT.md`` holds the
details: every figure with its interval and signature, the models and their calls, and each step's log.
Serving the chat at the end is the caller's: ``DemoOptions.serve_options()`` names what to serve.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stickerconv.pipelines.common import PipelineError, ProgressFactory, no_progress
from stickerconv.pipelines.demo_report import (
    PACK_FACTS,
    RETRIEVAL_SCORERS,
    STATE_FILE,
    SYSTEMS,
    DemoFacts,
    Headline,
    Rows,
    RunFolder,
    read_json,
    write_demo_report,
)

if TYPE_CHECKING:
    from stickerconv.llm import LLMConfig
    from stickerconv.pipelines.serving import ServeOptions

log = logging.getLogger(__name__)

DEMO_HEAD_LR = 2e-3  # the retrieval heads start from random and get tens of steps, not the paper's 140k
DEMO_SEARCHES = ("I failed my exam again", "We won the championship!")
DEMO_BATCH = 4  # PEGS batch size (fewer when the training split has fewer turns)
DEMO_CHECKPOINTS = 1  # per PEGS stage: its stages take under a minute, 3 extra 230 MB saves each cost more
ALIGN_RECORD = "align.json"  # in the alignment folder, written once it finished: its options and seconds
SPLIT_SEEDS = 20  # split seeds tried, from --seed on, for a split whose train and test both have a sticker reply


class DemoOptions(BaseModel):
    """Every option of the demo; the field defaults are ``stickerconv demo``'s. ``responder``, ``host`` and
    ``port`` describe the chat served at the end (``serve_options``); ``run_demo`` itself never serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Path("runs/demo")  # the run folder: every step's output and demo-state.json
    n_personas: int = Field(5, ge=2)  # user profiles to generate; one session each
    max_turns: int = Field(4, ge=1, le=20)  # turns per simulated session
    test_share: float = Field(0.34, ge=0.05, le=0.9)  # share of personas held out for testing
    pegs_preset: str = "small"  # PEGS preset (small, tiny) or config JSON
    pegs_steps: int = Field(25, ge=1)  # optimiser steps of each PEGS alignment stage
    joint_steps: int = Field(8, ge=1)  # optimiser steps of the PEGS joint (dialogue) stage
    vision_steps: int = Field(150, ge=1)  # steps of the PEGS vision pretraining
    eval_items: int | None = Field(None, ge=1)  # test turns each system answers (None: all)
    pack_limit: int | None = Field(None, ge=8)  # only the first N emoji of the pack (quick tries)
    llm: str | None = None  # the model of every LLM step; None: the config file's, else the embedded one
    config: Path | None = None  # LLM config file (per-role models); ``llm`` wins
    seed: int = 0
    responder: str = "pegs-ret"  # what the chat page talks to: one of the evaluated SYSTEMS
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.out)

    def serve_options(self) -> ServeOptions:
        """The chat at the end: the chosen responder over the run's pack (and checkpoint), users' images kept
        with the run, beside what it built."""
        from stickerconv.pipelines.serving import ServeOptions
        from stickerconv.serve.settings import ServeSettings

        checkpoint = self.run.checkpoint if self.responder.startswith("pegs") else None
        return ServeOptions(
            responder=self.responder,
            stickers=self.run.pack,
            checkpoint=checkpoint,
            llm=self.llm,
            config=self.config,
            settings=ServeSettings(uploads_dir=self.out / "uploads"),
        )


@dataclass(frozen=True)
class DemoModel:
    """The LLM of every LLM step: ``llm`` over the ``config`` file's, as every other command takes them."""

    config: LLMConfig
    config_file: Path | None

    @classmethod
    def resolve(cls, llm: str | None, config: Path | None) -> DemoModel:
        from stickerconv.llm import LLMConfig
        from stickerconv.llm.config import parse_llm_spec

        cfg = LLMConfig.resolve(config, llm=llm)
        for spec in cls._specs(cfg):
            parse_llm_spec(spec)  # a wrong --llm fails now, not after the pack is built
        return cls(cfg, config)

    @staticmethod
    def _specs(cfg: LLMConfig) -> list[str]:
        return [cfg.llm, *(role.llm for role in cfg.roles.values() if role.llm)]

    def describe(self) -> str:
        """``openai:gpt-4o-mini``, with the roles the config file gives a model of their own."""
        roles = [f"{name}: {role.llm}" for name, role in self.config.roles.items() if role.llm]
        return self.config.llm + (f" ({'; '.join(roles)})" if roles else "")

    def identity(self) -> dict[str, Any]:
        """What makes another model, for the step keys: the models, the config file's content, and the server
        of an OpenAI-compatible model (the same model name on another server is another model)."""
        remote = any(spec.startswith("openai") for spec in self._specs(self.config))
        server = (self.config.base_url or os.environ.get("OPENAI_BASE_URL")) if remote else None
        digest = hashlib.sha256(self.config_file.read_bytes()).hexdigest()[:16] if self.config_file else None
        return {"llm": self.describe(), "config": digest, "server": server}


@dataclass
class Step:
    name: str
    title: str
    outputs: list[Path]  # removed before a fresh run of the step
    params: dict[str, Any]
    run: Callable[[], Any]  # returns what the step's pipelines returned: logged as its result
    show: Callable[[], Rows | Headline]  # the result, read from the step's files
    after: list[str] = field(default_factory=list)  # steps whose results this one reads
    llm: str | None = None  # the model an LLM step runs on, as the user named it
    stores: list[Path] = field(default_factory=list)  # the LLM stores whose ledgers record its calls
    result: list[Path] = field(default_factory=list)  # what later steps and the chat read (none: the outputs)

    def finished(self) -> bool:
        """Whether what the step left is still whole: a deleted checkpoint inside a kept folder redoes it."""
        return all(path.exists() for path in self.result or self.outputs)


StepStatus = Literal["new", "resuming", "redoing", "cached", "built", "failed"]


class StepReport(BaseModel):
    """One step as the console shows it: when it starts (``new``, ``resuming``, ``redoing``), then when it is
    ``built`` or ``cached`` (with its rows, or the evaluation's headline table) or has ``failed``."""

    number: int
    total: int
    name: str
    title: str
    status: StepStatus
    seconds: float | None = None  # built: this run's time; cached: the build's
    rows: Rows = Field(default_factory=list)
    headline: Headline | None = None
    log: Path  # what the step logged


class DemoResult(BaseModel):
    """What ``run_demo`` did: each step's final report, the evaluation's headline table and the report file."""

    out: Path
    steps: list[StepReport]
    headline: Headline | None
    report: Path
    seconds: float  # this run's time, cached steps included


class DemoState:
    """``demo-state.json``: per step, its key, whether it finished, when it started, how long it took and
    the model it ran on."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.steps: dict[str, dict[str, Any]] = read_json(path) or {}
        except ValueError as exc:
            raise PipelineError(f"{path}: not a demo state file ({exc}); delete it to redo every step") from None

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.steps, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)


def step_key(step: Step, keys: dict[str, str]) -> str:
    blob = json.dumps({"params": step.params, "after": [keys[a] for a in step.after]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")  # the LLM ledger's timestamp form


# ---------------------------------------------------------------------------------------- running the steps
def run_demo(
    options: DemoOptions,
    *,
    progress: ProgressFactory = no_progress,
    on_step: Callable[[StepReport], None] | None = None,
) -> DemoResult:
    """Build (or reuse) every step in ``options.out``, then write ``REPORT.md``.

    ``on_step`` hears each step start and finish (the CLI prints them). A failing step's error propagates after
    ``on_step`` heard it fail; its log holds the traceback. Raises ``ConfigError`` for an unknown model before
    any step runs, and ``PipelineError`` for a responder the demo does not evaluate."""
    if options.responder not in SYSTEMS:
        raise PipelineError(f"--responder {options.responder!r}: choose from {', '.join(SYSTEMS)}")
    model = DemoModel.resolve(options.llm, options.config)
    started = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    state = DemoState(options.out / STATE_FILE)
    facts = DemoFacts(options.run, lambda name: state.steps.get(name, {}).get("started"))
    alignment = Alignment(options)
    steps = demo_steps(options, model, facts, progress, alignment)
    try:
        reports, spent = run_steps(steps, state, options.run, on_step or (lambda report: None))
    finally:
        alignment.stop()  # only still running when the PEGS step did not run to adopt it
    total = time.perf_counter() - started
    report = write_demo_report(facts, state.steps, spent, steps, total)
    headline = next((r.headline for r in reports if r.headline is not None), None)
    return DemoResult(out=options.out, steps=reports, headline=headline, report=report, seconds=total)


def run_steps(
    steps: list[Step], state: DemoState, run: RunFolder, on_step: Callable[[StepReport], None]
) -> tuple[list[StepReport], dict[str, float]]:
    """Run or skip each step; returns each step's final report and the seconds it took this time (0 if cached)."""
    keys: dict[str, str] = {}
    spent: dict[str, float] = {}
    reports = []
    for number, step in enumerate(steps, 1):
        key = keys[step.name] = step_key(step, keys)
        record = state.steps.get(step.name, {})
        head = {"number": number, "total": len(steps), "name": step.name, "title": step.title}
        head["log"] = run.log(step.name)
        if record.get("key") == key and record.get("done") and step.finished():
            spent[step.name] = 0.0
            reports.append(_shown(step, StepReport(**head, status="cached", seconds=record.get("seconds", 0))))
            on_step(reports[-1])
            continue
        if record.get("key") == key:
            on_step(StepReport(**head, status="resuming"))
        else:
            on_step(StepReport(**head, status="redoing" if any(p.exists() for p in step.outputs) else "new"))
            for path in step.outputs:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        started = record.get("started") if record.get("key") == key else None
        state.steps[step.name] = {"key": key, "done": False, "started": started or _now(), "llm": step.llm}
        state.save()
        try:
            spent[step.name] = _run_step(step, run.log(step.name))
        except BaseException:
            on_step(StepReport(**head, status="failed"))
            raise
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        state.steps[step.name] |= {"done": True, "seconds": round(spent[step.name], 1), "finished": finished}
        state.save()
        reports.append(_shown(step, StepReport(**head, status="built", seconds=spent[step.name])))
        on_step(reports[-1])
    return reports, spent


def _run_step(step: Step, log_file: Path) -> float:
    """Run one step with what it logs kept in ``log_file``; returns its seconds."""
    start = time.perf_counter()
    with step_log(log_file):
        try:
            result = step.run()
        except BaseException:  # the traceback for the report; the caller hears the error itself, once
            log.info("%s failed", step.title, exc_info=True)
            raise
        log.info("%s done:\n%s", step.title, _as_text(result))
    return time.perf_counter() - start


def _shown(step: Step, report: StepReport) -> StepReport:
    shown = step.show()
    if isinstance(shown, Headline):
        return report.model_copy(update={"headline": shown})
    return report.model_copy(update={"rows": shown})


class _Forward(logging.Handler):
    """Hands the records the caller's handlers showed before on to them, while the step's log takes them all."""

    def __init__(self, level: int, parent: logging.Logger):
        super().__init__(level)
        self.parent = parent

    def emit(self, record: logging.LogRecord) -> None:
        self.parent.handle(record)


@contextmanager
def step_log(path: Path) -> Iterator[None]:
    """Within the block, every ``stickerconv`` log record from INFO up also goes to ``path`` (overwritten).

    Why: the pipelines report what they did through logging, and that belongs in the report, not between the
    figures on the console; the records the caller would have seen anyway (warnings, by default) still reach
    the caller's handlers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("stickerconv")
    level, propagate = logger.level, logger.propagate
    forward = _Forward(logger.getEffectiveLevel(), logger.parent or logging.getLogger())
    sink = logging.FileHandler(path, mode="w", encoding="utf-8")
    sink.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(sink)
    logger.addHandler(forward)
    logger.setLevel(min(logging.INFO, logger.getEffectiveLevel()))
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(sink)
        logger.removeHandler(forward)
        logger.setLevel(level)
        logger.propagate = propagate
        sink.close()


def _as_text(value: Any) -> str:
    """A step's results as indented JSON, one after another: what the report's step output shows."""
    if isinstance(value, list | tuple):
        return "\n".join(_as_text(item) for item in value)
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value), indent=1, ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    """The JSON shape of a pipeline's result: its ``to_dict``, a pydantic dump, a dataclass's fields (not
    ``asdict``, which deep-copies whatever they hold), else its text."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------------------------------- the steps
def demo_steps(
    options: DemoOptions,
    model: DemoModel,
    facts: DemoFacts,
    progress: ProgressFactory,
    alignment: Alignment | None = None,
) -> list[Step]:
    """The six steps in order, each bound to its options; the params are what redoes a step when changed.
    ``alignment`` runs PEGS's sticker-only stages beside the simulation (None: the PEGS step runs them)."""
    from stickerconv.pegs.model import CHECKPOINT_PARTS
    from stickerconv.pipelines.pegs_training import STAGE_ORDER

    run, seed = options.run, options.seed
    on_model = {"llm": model.identity()}  # in the key of every LLM step: another model redoes them
    llm = model.describe()

    def bound(work: Callable[..., Any]) -> Callable[[], Any]:
        return functools.partial(work, options, progress)

    def beside(work: Callable[..., Any]) -> Callable[[], Any]:
        return functools.partial(work, options, progress, alignment)

    pegs = {"config": options.pegs_preset, "stages": STAGE_ORDER, "steps": options.pegs_steps}
    pegs |= {"joint": options.joint_steps, "vision": options.vision_steps, "seed": seed}
    checkpoint = [run.checkpoint / name for name in CHECKPOINT_PARTS]
    return [
        Step("pack", "sticker pack and index", [run.pack], {"limit": options.pack_limit}, bound(_pack), facts.pack),
        Step(
            "personas",
            f"{options.n_personas} personas (self-instruct)",
            [run.profiles],
            {"n": options.n_personas, "seed": seed} | on_model,
            bound(_personas),
            lambda: facts.personas(llm),
            llm=llm,
            stores=[run.personas_store],
        ),
        Step(
            "simulate",
            "Agent4SC sessions",
            [run.sessions],
            {"max_turns": options.max_turns, "seed": seed} | on_model,
            beside(_simulate),
            lambda: facts.simulate(llm),
            ["pack", "personas"],
            llm=llm,
            stores=[run.simulate_store],
        ),
        Step(
            "dataset",
            "dataset statistics, split, samples",
            [run.dataset],
            {"test": options.test_share, "seed": seed},
            bound(_dataset),
            facts.dataset,
            ["simulate"],
            result=[run.train_samples, run.test_samples],
        ),
        Step(
            "pegs",
            f"PEGS {options.pegs_preset}",
            [run.pegs],
            pegs,
            beside(_pegs),
            facts.pegs,
            ["dataset"],
            result=checkpoint,
        ),
        Step(
            "evaluate",
            "baselines and PEGS on the test turns",
            [run.evaluation],
            {"items": options.eval_items} | on_model,
            bound(_evaluate),
            facts.headline,
            ["pegs"],
            llm=llm,
            stores=run.evaluation_stores,
        ),
    ]


def _pack(options: DemoOptions, progress: ProgressFactory) -> Any:
    """The default pack and its index, and two searches to show it works."""
    from stickerconv.pipelines.stickers import IndexOptions, PackOptions, build_indexed_pack
    from stickerconv.stickers.index import StickerIndex

    pack = options.run.pack
    built = build_indexed_pack(PackOptions(pack, limit=options.pack_limit), index=IndexOptions(pack), progress=progress)
    found = StickerIndex.load(pack)
    searches = {query: [hit.to_dict() for hit in found.search(query, k=3)] for query in DEMO_SEARCHES}
    labels = Counter(s.label.value if s.label else "-" for s in found.stickers)
    facts = {"stickers": len(found), "labels": dict(labels.most_common()), "searches": searches}
    facts |= {k: v for k, v in StickerIndex.read_meta(pack).items() if k in ("embedder", "kind")}
    (pack / PACK_FACTS).write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [built.build, built.index, searches]


def _personas(options: DemoOptions, progress: ProgressFactory) -> Any:
    from stickerconv.pipelines.personas import PersonaOptions, generate_personas

    n = options.n_personas
    wanted = PersonaOptions(n, options.run.profiles, seed=options.seed, llm=options.llm, config=options.config)
    result = generate_personas(wanted, progress=progress)
    if not result.complete:
        raise PipelineError(
            f"stopped at {result.report.accepted} of {n} profiles: too many near-duplicates or failed calls; "
            "run the demo again to continue"
        )
    return result


def _simulate(options: DemoOptions, progress: ProgressFactory, alignment: Alignment | None = None) -> Any:
    from stickerconv.pipelines.generation import GenerationOptions, generate

    run = options.run
    wanted = GenerationOptions(
        personas=run.profiles,
        stickers=run.pack,
        out=run.sessions,
        llm=options.llm,
        config=options.config,
        # The embedded model answers one call at a time: a second session in flight only makes the two alternate
        # through its prefix cache (349 s against 370 s for the default five, bench/README.md).
        concurrency=1 if (options.llm or "local").split(":")[0] == "local" and options.config is None else 2,
        max_turns=options.max_turns,
        seed=options.seed,
    )
    if alignment is not None:
        alignment.start()
    try:
        return generate(wanted, progress=progress)
    except BaseException:
        if alignment is not None:
            alignment.stop()
        raise


def _dataset(options: DemoOptions, progress: ProgressFactory) -> Any:
    """Statistics of the sessions, a split by persona, and the train and test samples PEGS and the evaluation
    read; refuses a split without a sticker reply, which could neither train nor score PEGS."""
    from stickerconv.pipelines import dataset

    run = options.run
    conversations = run.sessions / "conversations.jsonl"
    if not conversations.is_file():
        raise PipelineError(f"{conversations}: the simulation kept no session; rerun with more --n-personas")
    results: list[Any] = [dataset.stats(dataset.StatsOptions(conversations, run.dataset / "stats", run.profiles))]
    shares = (round(1 - options.test_share, 4), 0.0, round(options.test_share, 4))
    # A handful of sessions may put every sticker reply on one side by chance: the next seeds are tried (the
    # split stays by persona and seeded, so a rerun picks the same one), and only when none works does it stop.
    for seed in range(options.seed, options.seed + SPLIT_SEEDS):
        split = dataset.SplitOptions(conversations, run.dataset / "split", ratios=shares, seed=seed)
        made = [dataset.split(split, progress=progress)]
        for name, target in (("train", run.train_samples), ("test", run.test_samples)):
            wanted = dataset.ConvertOptions(
                run.dataset / "split" / f"{name}.jsonl", "samples", target, stickers=run.pack
            )
            made.append(dataset.convert(wanted, progress=progress))
        empty = [
            t for t in (run.train_samples, run.test_samples) if not any(s.get("response_image") for s in read_json(t))
        ]
        if not empty:
            log.info("split by persona with seed %d: train and test both have sticker replies", seed)
            return results + made
    raise PipelineError(
        f"{empty[0]}: no assistant turn with a sticker under any of {SPLIT_SEEDS} split seeds, so PEGS cannot be "
        "trained or scored; rerun with more --n-personas or --max-turns"
    )


def _pegs_options(options: DemoOptions, stages: tuple[str, ...], batch_size: int, out: Path) -> Any:
    from stickerconv.pipelines.pegs_training import DATA_STAGES, PegsTrainingOptions

    run = options.run
    return PegsTrainingOptions(
        preset=options.pegs_preset,
        stickers=run.pack,
        out=out,
        data=run.train_samples if any(stage in DATA_STAGES for stage in stages) else None,
        stages=stages,
        steps=options.pegs_steps,
        joint_steps=options.joint_steps,
        batch_size=batch_size,
        head_lr=DEMO_HEAD_LR,
        seed=options.seed,
        vision_steps=options.vision_steps,
        checkpoints=DEMO_CHECKPOINTS,
    )


def _pegs(options: DemoOptions, progress: ProgressFactory, alignment: Alignment | None = None) -> Any:
    from stickerconv.pipelines.pegs_training import STAGE_ORDER, train_pegs

    run = options.run
    if alignment is not None:
        alignment.adopt(run.pegs)
    batch = min(DEMO_BATCH, len(read_json(run.train_samples)))  # a toy run may have fewer training turns
    return train_pegs(_pegs_options(options, STAGE_ORDER, batch, run.pegs), progress=progress)


class Alignment:
    """PEGS's stages that read only the sticker library, run in a second process while the sessions are
    simulated, into ``pegs-align/``; the PEGS step then moves the finished stage folders into ``pegs/``, where
    ``pegs train`` finds them finished and goes on with the dialogue stages.

    Why beside the simulation: the embedded model generates on one thread (llm/backends/local.py says why), so
    on 2 cores the other one idles for the five minutes the sessions take, while the sticker-only stages need
    about two and a half on it. The second process keeps to one thread. Nothing depends on it: a failed or
    stopped alignment is reported, its folder is left aside, and the PEGS step trains every stage itself; a
    folder finished under other options (``align.json``) is never adopted."""

    def __init__(self, options: DemoOptions):
        self.options = options
        self.process: multiprocessing.process.BaseProcess | None = None
        self.started = 0.0

    @property
    def wanted(self) -> Any:
        from stickerconv.pipelines.pegs_training import DATA_STAGES, STAGE_ORDER

        stages = tuple(s for s in STAGE_ORDER if s not in DATA_STAGES)
        return _pegs_options(self.options, stages, DEMO_BATCH, self.options.run.pegs_align)

    def start(self) -> None:
        """Start the stages in a spawned process (a fork would copy the parent's threads and llama.cpp state)."""
        folder = self.options.run.pegs_align
        shutil.rmtree(folder, ignore_errors=True)  # a rerun starts clean: stages under other options are no use
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=_align, args=(self.wanted, self.options.run.log("pegs-align")), name="pegs-align"
        )
        self.started = time.perf_counter()
        self.process.start()
        log.info("PEGS sticker-only stages started beside the simulation (log: %s)", self.options.run.log("pegs-align"))

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()
            log.warning("PEGS sticker-only stages stopped before they finished; the PEGS step trains them itself")
        self.process = None

    def adopt(self, pegs: Path) -> list[str]:
        """Wait for the stages, then move their finished folders into ``pegs``; returns the folders moved
        (none when the alignment did not run, failed, or ran under other options). Its ``final/`` stays behind:
        the PEGS step writes its own."""
        from stickerconv.pipelines.pegs_training import FINAL_DIR

        folder = self.options.run.pegs_align
        if self.process is not None:
            self.process.join()
            code, self.process = self.process.exitcode, None
            since = time.perf_counter() - self.started
            log.info("PEGS sticker-only stages: exit code %s, %.0f s after their start", code, since)
        record = read_json(folder / ALIGN_RECORD) if (folder / ALIGN_RECORD).is_file() else {}
        if record.get("options") != json.loads(self.wanted.model_dump_json()):
            if folder.exists():
                log.warning("%s: not finished under this run's options, left aside; training every stage", folder)
            return []
        pegs.mkdir(parents=True, exist_ok=True)
        moved = []
        for stage_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != FINAL_DIR):
            if not (pegs / stage_dir.name).exists():  # a stage already in pegs/ (a resumed step) is kept
                stage_dir.replace(pegs / stage_dir.name)
                moved.append(stage_dir.name)
        shutil.rmtree(folder)
        log.info("PEGS step: adopted %s, trained in %.0f s beside the simulation", ", ".join(moved), record["seconds"])
        return moved


def _align(options: Any, log_file: Path) -> None:
    """The second process: one torch thread, everything logged to ``log_file``, ``align.json`` written last.
    What it prints joins the log too: libraries' bars and warnings, a traceback, would otherwise break into
    the demo's step tables at random moments."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as sink:  # the descriptors stay open on the duplicates
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    import torch

    from stickerconv.pipelines.pegs_training import train_pegs

    started = time.perf_counter()
    torch.set_num_threads(1)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train_pegs(options)
    except BaseException:
        logging.getLogger(__name__).exception("PEGS sticker-only stages failed")
        raise
    record = {"options": json.loads(options.model_dump_json()), "seconds": round(time.perf_counter() - started, 1)}
    (options.out / ALIGN_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _evaluate(options: DemoOptions, progress: ProgressFactory) -> Any:
    """The three responders on the same test turns, their scores side by side, and the retrieval protocols of
    the index, the tool baseline's query and PEGS."""
    from stickerconv.pipelines import evaluation

    run, models = options.run, {"llm": options.llm, "config": options.config}
    run.evaluation.mkdir(parents=True, exist_ok=True)
    results: list[Any] = []
    for system in SYSTEMS:
        wanted = evaluation.PredictOptions(
            responder=system,
            data=run.test_samples,
            out=run.evaluation / f"pred-{system}.json",
            stickers=run.pack,
            concurrency=2,
            limit=options.eval_items,
            checkpoint=run.checkpoint if system.startswith("pegs") else None,
            **models,
        )
        results.append(evaluation.predict(wanted, progress=progress))
    preds = [result.out for result in results]
    metrics = ("bleu", "rouge", "dist")
    scoring = evaluation.ScoreOptions(preds, run.evaluation, SYSTEMS, metrics, stickers=run.pack, seed=options.seed)
    scored = evaluation.score(scoring, progress=progress)
    results.append({"report": scored.report, "samples": scored.samples})  # the figures are in the report
    for name in RETRIEVAL_SCORERS:
        wanted = evaluation.RetrievalOptions(
            data=run.test_samples,
            stickers=run.pack,
            out=run.evaluation / f"retrieval-{name}.json",
            train=run.train_samples,
            seed=options.seed,
            scorer="index" if name == "pegs" else name,
            checkpoint=run.checkpoint if name == "pegs" else None,
            concurrency=2,
            **models,
        )
        found = evaluation.retrieval(wanted, progress=progress)
        results.append(
            [f"{name} {group}: {result}" for group, metrics in found.groups.items() for result in metrics.values()]
        )
    return results
