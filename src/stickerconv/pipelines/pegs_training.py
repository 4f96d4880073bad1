"""PEGS training as one call: ``pegs train`` and ``pegs fit-send`` without the command line.

Why here and not in ``pegs/``: ``pegs/`` holds the pieces (one stage's loop, the vision pretraining, the
distillation, the send fit); this module holds the run that chains them: which stages run in which order,
which are skipped and why, where each stage's checkpoint lives and which one the next starts from, how a rerun
resumes, and which rank of an ``accelerate launch`` runs the single-process stages. The CLI, the demo and a
notebook all call :func:`train_pegs` and get the same folders.

The run folder: ``00-vision/`` (when the vision stage runs), then one ``NN-stage/`` per model stage in the
order of :data:`STAGE_ORDER`, numbered by position among the chosen ones, then ``final/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from stickerconv.pegs.config import SendFit
from stickerconv.pipelines.common import PipelineError, ProgressFactory, no_progress
from stickerconv.profiles import DEFAULT_PROFILE, Profile

if TYPE_CHECKING:
    from stickerconv.data.io import DataSource
    from stickerconv.data.samples import Sample
    from stickerconv.pegs.config import PegsConfig
    from stickerconv.pegs.model import PegsModel
    from stickerconv.pegs.train import StageConfig, TrainResult, VisionStageResult
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

STAGE_ORDER = ("vision", "perception", "retrieval", "generation", "joint", "distill", "send")
VISION_DIR = "00-vision"  # before the numbered model stages, whichever of them run
FINAL_DIR = "final"
DATA_STAGES = ("joint", "distill", "send")  # the stages that read the dialogues of ``data``
SEND_RECORD = "send.json"  # written last into the send stage's folder: its presence marks the stage finished
SendTarget = Literal["share", "f1"]
Precision = Literal["auto", "no", "fp16", "bf16"]
Decision = Literal["threshold", "greedy"]
SEND_TARGETS: tuple[str, ...] = get_args(SendTarget)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DECISIONS: tuple[str, ...] = get_args(Decision)
DEFAULT_SEND_TURNS = 128  # = pegs.send.DEFAULT_TURNS (kept here so the CLI's help does not import torch)
DEFAULT_DISTILL_LIBRARY = 100  # = pegs.distill.LIBRARY_STICKERS, likewise
DEFAULT_STEPS, DEFAULT_BATCH_SIZE = 200, 8  # the default profile's stage length and batch: CPU runs of tiny/small


class PegsTrainingOptions(BaseModel):
    """Everything ``pegs train`` takes; the field defaults are the command's defaults.

    The per-stage settings follow ``profile`` (:func:`stage_settings`). ``default``: short runs sized for a CPU
    run of the ``tiny`` and ``small`` presets, not :class:`~stickerconv.pegs.train.StageConfig`'s: 200 steps
    (StageConfig's ``max_steps`` is 1000), batch 8 (StageConfig's 6, the paper's joint batch), no accumulation,
    warm-up a tenth of the steps, StageConfig's optimiser. ``paper``: each stage's row of the §5.4 table
    (:func:`~stickerconv.pegs.train.paper_stage`: learning rate, betas, weight decay, warm-up, batch,
    accumulation), run for the table's epochs over the stage's data. ``steps``, ``joint_steps``,
    ``batch_size``, ``grad_accum``, ``lr`` and ``head_lr``, when set, win under either profile. ``checkpoints``
    fall evenly through each gradient stage (4: every quarter, so a stage resumes at most a quarter back; 1:
    only at its end, for stages of seconds, where each 230 MB optimiser state written costs more than a
    rerun of the stage would). Rerunning with the same ``out``
    resumes: a finished stage is loaded, an interrupted one continues from its last checkpoint.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str  # a preset name (tiny, small, paper, paper-shapes) or a PEGS config JSON file
    stickers: Path  # the library: images and captions of the alignment stages, the distill stage's index
    out: Path  # the run folder
    data: Path | None = None  # dialogues of the joint, distill and send stages: samples or conversations
    stages: tuple[str, ...] = STAGE_ORDER  # run in this order; checked against STAGE_ORDER
    profile: Profile = DEFAULT_PROFILE  # the stages' settings: ours (short CPU runs) or the paper's §5.4 table
    steps: int | None = Field(None, ge=1)  # optimiser steps of each gradient stage; None: the profile's
    joint_steps: int | None = Field(None, ge=1)  # the joint stage's (None: ``steps``); its batches are the slow ones
    batch_size: int | None = Field(None, ge=1)  # per process; None: the profile's
    grad_accum: int | None = Field(None, ge=1)  # micro-batches per optimiser step; None: the profile's
    lr: float | None = None  # None: the profile's (default: StageConfig.lr; paper: the stage's)
    head_lr: float | None = None  # retrieval heads and mapper; None: ``lr``. 2e-3 suits short CPU runs
    image_root: Path | None = None  # root of the samples' image paths; None: ``stickers``
    seed: int = 42
    vision_steps: int = Field(300, ge=1)  # CNN pretraining steps (about 0.1-0.2 s each on 2 cores)
    checkpoints: int = Field(4, ge=1)  # resumable checkpoints per gradient stage, the last at its end
    distill_steps: int = Field(1000, ge=1)  # fitting steps of the distill stage (on cached states: fast)
    distill_library: int = Field(
        DEFAULT_DISTILL_LIBRARY, ge=0
    )  # stickers whose annotations the distill stage also reads
    send_fit: SendTarget = "share"  # what the send threshold matches on the training turns
    send_turns: int = Field(DEFAULT_SEND_TURNS, ge=2)  # training turns the send threshold is fitted on
    mixed_precision: Precision = "auto"  # as StageConfig.mixed_precision
    gradient_checkpointing: bool = False
    num_workers: int | None = Field(None, ge=0)  # DataLoader workers; None: StageConfig's rule (0 on CPU)


@dataclass(frozen=True)
class StageNotRun:
    """A stage that does not run: a chosen one the config gives nothing to train (``why`` says what is missing),
    or one not chosen (``why`` says what its absence means for the checkpoint)."""

    stage: str
    why: str
    chosen: bool


@dataclass(frozen=True)
class DataLoaded:
    """The dialogues read for the data stages."""

    description: str  # the source's own one-line description (file, kind, count)
    samples: int  # training samples (one a turn)
    rendered_style: str | None  # the prompt style conversations were rendered in; None: read as samples


@dataclass(frozen=True)
class VisionDone:
    """The vision stage, trained now or reused from ``stage_dir``."""

    stage_dir: Path
    result: VisionStageResult


@dataclass(frozen=True)
class StageTrained:
    """One gradient stage (perception, retrieval, generation, joint), trained or resumed."""

    stage: str
    number: int  # its position among the chosen model stages (the folder's NN)
    stage_dir: Path
    result: TrainResult
    settings: StageConfig  # what it ran with, under the run's profile

    def loss_means(self) -> tuple[int, float, float]:
        """(n, mean of the first n losses, mean of the last n): single steps are noisy, so the first and last
        tenths are compared."""
        losses = self.result.losses
        tenth = max(1, len(losses) // 10)
        return tenth, sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth


@dataclass(frozen=True)
class DistillDone:
    """The distill stage; ``record`` is what ``distill.json`` holds (turns, gold, left_out, overlaps, losses)."""

    stage_dir: Path
    record: dict[str, Any]
    reused: bool


@dataclass(frozen=True)
class SendDone:
    """The send stage (or ``pegs fit-send``): the fitted threshold; ``replaced`` is the finished stage's fit
    that was fitted again because its target or number of turns differs."""

    stage_dir: Path
    fit: SendFit

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_file": str(self.config_file),
            "decision": self.decision,
            "fit": self.fit.model_dump(mode="json"),
        }

    reused: bool
    replaced: SendFit | None = None


PegsEvent = StageNotRun | DataLoaded | VisionDone | StageTrained | DistillDone | SendDone
EventSink = Callable[[PegsEvent], None]


@dataclass
class PegsTrainingResult:
    """What a run did, in order (``events``), and where it left things."""

    out: Path
    profile: Profile = DEFAULT_PROFILE  # the profile the stages ran under (also in each checkpoint's state)
    events: list[PegsEvent] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # stages trained or reused, in order
    skipped: dict[str, str] = field(default_factory=dict)  # chosen stage -> why it did not run
    checkpoints: dict[str, Path] = field(default_factory=dict)  # stage -> its folder
    final: Path | None = None  # final/: None when only the vision stage ran
    distill: dict[str, Any] | None = None  # the distill record
    send: SendFit | None = None  # the fitted send threshold; None: the checkpoint sends on a greedy [IMG1]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: paths as strings, each gradient stage's loss as the means of its first and last tenths,
        the distill record without its per-step losses."""
        losses = {}
        for event in self.events:
            if isinstance(event, StageTrained):
                tenth, first, last = event.loss_means()
                losses[event.stage] = {
                    "steps": event.result.steps,
                    "loss_first": first,
                    "loss_last": last,
                    "settings": event.settings.model_dump(mode="json"),
                }
        return {
            "out": str(self.out),
            "profile": self.profile,
            "ran": self.ran,
            "skipped": self.skipped,
            "checkpoints": {stage: str(path) for stage, path in self.checkpoints.items()},
            "final": str(self.final) if self.final is not None else None,
            "stages": losses,
            "distill": {k: v for k, v in self.distill.items() if k != "losses"} if self.distill else None,
            "send": self.send.model_dump(mode="json") if self.send is not None else None,
        }


class FitSendOptions(BaseModel):
    """Everything ``pegs fit-send`` takes; the field defaults are the command's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path  # a PEGS checkpoint folder; its pegs_config.json is rewritten
    data: Path  # its training dialogues: samples or conversations
    stickers: Path  # the library the dialogues' stickers resolve in
    image_root: Path | None = None  # None: ``stickers``
    target: SendTarget = "share"
    turns: int = Field(DEFAULT_SEND_TURNS, ge=2)
    decision: Decision = "threshold"
    seed: int = 42


@dataclass
class FitSendResult:
    config_file: Path  # the rewritten pegs_config.json
    decision: str
    data: DataLoaded
    fit: SendFit

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_file": str(self.config_file),
            "decision": self.decision,
            "fit": self.fit.model_dump(mode="json"),
        }


def train_pegs(
    options: PegsTrainingOptions, *, progress: ProgressFactory = no_progress, on_event: EventSink | None = None
) -> PegsTrainingResult:
    """Train the chosen stages in order, each starting from the previous one's checkpoint, into
    ``options.out``; ``on_event`` hears each step as it finishes (the CLI prints them), and the result holds
    them all. Under ``accelerate launch`` every rank calls this: the gradient stages run on all ranks, while
    rank 0 alone runs and writes vision, distill and send and the other ranks then load its finished stage.

    Raises :class:`PipelineError` for input the caller can fix, before any stage runs where it can be known."""
    from stickerconv.pegs.train import untrained_cnns
    from stickerconv.stickers.library import StickerLibrary

    run = _Run(options, progress, on_event)
    chosen = _chosen_stages(options)
    source = _open_dialogues(options.data) if options.data is not None else None  # a wrong file fails first
    config = _load_config(options.preset)
    for stage, lacking, reason in (
        ("generation", config.sd is None, "the config has no Stable Diffusion section"),
        ("distill", config.n_ret_tokens == 0, "the config has no retrieval tokens"),
    ):
        if stage in chosen and lacking:
            run.skip(stage, reason)
            chosen.remove(stage)
    run.library = StickerLibrary.load(options.stickers)
    run.index = _distill_index(run.library) if "distill" in chosen else None  # checked before any training
    run.samples = run.load_samples(source, config) if source is not None else None
    if "vision" in chosen:
        chosen.remove("vision")
        with run.state.main_process_first():  # rank 0 pretrains; the other ranks then reuse its finished stage
            config = run.vision(config)
    elif untrained_cnns(config):
        run.emit(StageNotRun("vision", "the CNN stays randomly initialised and frozen", chosen=False))
    if chosen:
        run.model_stages(config, chosen)
    return run.result


def fit_send_threshold(options: FitSendOptions, *, progress: ProgressFactory = no_progress) -> FitSendResult:
    """Fit the send threshold of an existing checkpoint and set its decision mode, in place (the weights are
    unchanged: the threshold lives in the config): for checkpoints trained before the send stage existed, or
    to refit the threshold to another target."""
    from stickerconv.pegs.config import SendConfig
    from stickerconv.pegs.model import CONFIG_FILE, PegsModel
    from stickerconv.stickers.library import StickerLibrary

    config_file = options.checkpoint / CONFIG_FILE
    if not config_file.is_file():
        raise PipelineError(f"{options.checkpoint}: not a PEGS checkpoint (no {CONFIG_FILE})")
    source = _open_dialogues(options.data)
    model = PegsModel.from_pretrained(options.checkpoint)
    model.config = model.config.model_copy(update={"send": SendConfig(decision=options.decision)})
    samples, loaded = _load_samples(source, StickerLibrary.load(options.stickers), model.config)
    image_root = options.image_root or options.stickers
    with progress(f"send threshold (reply to {min(options.turns, len(samples))} turns)") as update:
        fit = _fit_send(model, samples, image_root, options.target, options.turns, options.seed, update)
    model.save_config(options.checkpoint)
    return FitSendResult(config_file, options.decision, loaded, fit)


def _chosen_stages(options: PegsTrainingOptions) -> list[str]:
    """The stages to run, in the given order; unknown ones and data stages without dialogues are refused."""
    chosen = [s for s in options.stages if s]
    unknown = [s for s in chosen if s not in STAGE_ORDER]
    if unknown or not chosen:
        raise PipelineError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGE_ORDER)}")
    for stage in DATA_STAGES:
        if stage in chosen and options.data is None:
            raise PipelineError(
                f"the {stage} stage trains on dialogues: give --data SAMPLES (stickerconv data convert --to samples) "
                "or --data CONVERSATIONS"
            )
    return chosen


def _open_dialogues(path: Path) -> DataSource:
    from stickerconv.data.io import open_source

    return open_source(path, ("samples", "conversations"))


def _load_config(preset: str) -> PegsConfig:
    """A preset by name, else a PEGS config JSON file."""
    from stickerconv.pegs.config import PRESETS, PegsConfig

    return PegsConfig.preset(preset) if preset in PRESETS else PegsConfig.load(Path(preset))


def _load_samples(source: DataSource, library: StickerLibrary, config: PegsConfig) -> tuple[list[Sample], DataLoaded]:
    """The training samples and what was read; conversations are rendered in the model's prompt style with
    library-relative image paths, as `data convert --to samples --stickers` would."""
    from stickerconv.data.convert import ImageLocator
    from stickerconv.data.resolve import StickerResolver
    from stickerconv.data.samples import load_samples

    samples = load_samples(source, config.style, ImageLocator(StickerResolver(library)).path)
    if not samples:
        raise PipelineError(f"{source.name}: no dialogue turns to train on")
    rendered = config.style if source.kind == "conversations" else None
    return samples, DataLoaded(source.describe(), len(samples), rendered)


def _distill_index(library: StickerLibrary) -> StickerIndex:
    """The library's text index, the distill stage's teacher; a clear error when it has none."""
    from stickerconv.stickers.index import StickerIndex, StickerIndexError

    try:
        return StickerIndex.load(library)
    except StickerIndexError as exc:
        raise PipelineError(f"the distill stage ranks stickers with the library's text index: {exc}") from None


def _fit_send(
    model: PegsModel,
    samples: list[Sample],
    image_root: Path,
    target: str,
    turns: int,
    seed: int,
    update: Callable[[int, int], None],
) -> SendFit:
    """Reply to up to ``turns`` training turns and give ``model`` the threshold fitted on those replies."""
    from stickerconv.pegs.send import fit_send

    try:
        return fit_send(model, samples, image_root, target, limit=turns, seed=seed, on_progress=update)  # type: ignore[arg-type]
    except (ValueError, FileNotFoundError) as exc:
        raise PipelineError(f"send threshold: {exc}") from None


class _Run:
    """One ``train_pegs`` call: its options, what it has loaded, and the result it fills as stages finish."""

    def __init__(self, options: PegsTrainingOptions, progress: ProgressFactory, on_event: EventSink | None):
        from stickerconv.pegs.train import process_state

        self.options, self.progress, self.on_event = options, progress, on_event
        self.state = process_state()  # launched: every rank runs the gradient stages; rank 0 alone the rest
        self.result = PegsTrainingResult(options.out, options.profile)
        self.library: StickerLibrary | None = None
        self.index: StickerIndex | None = None
        self.samples: list[Sample] | None = None

    @property
    def image_root(self) -> Path:
        return self.options.image_root or self.options.stickers

    def emit(self, event: PegsEvent) -> None:
        self.result.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def skip(self, stage: str, reason: str) -> None:
        log.info("skipping the %s stage: %s", stage, reason)
        self.result.skipped[stage] = reason
        self.emit(StageNotRun(stage, reason, chosen=True))

    def finished(self, stage: str, stage_dir: Path, event: PegsEvent) -> None:
        self.result.ran.append(stage)
        self.result.checkpoints[stage] = stage_dir
        self.emit(event)

    def load_samples(self, source: DataSource, config: PegsConfig) -> list[Sample]:
        assert self.library is not None
        samples, loaded = _load_samples(source, self.library, config)
        self.emit(loaded)
        return samples

    def vision(self, config: PegsConfig) -> PegsConfig:
        """Run (or reuse) the vision stage; returns the config whose CNN loads the pretrained weights."""
        from stickerconv.pegs.train import untrained_cnns, vision_stage
        from stickerconv.stickers.embed import load_embedder

        assert self.library is not None
        if not untrained_cnns(config):
            self.skip("vision", "the config has no CNN without weights to pretrain")
            return config
        stage_dir = self.options.out / VISION_DIR
        embed = load_embedder("minilm").embed
        try:
            with self.progress("stage 0: vision (CNN pretraining)") as update:
                result = vision_stage(
                    config,
                    self.library,
                    stage_dir,
                    embed,
                    self.options.vision_steps,
                    seed=self.options.seed,
                    on_progress=update,
                )
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        self.finished("vision", stage_dir, VisionDone(stage_dir, result))
        return result.config

    def model_stages(self, config: PegsConfig, chosen: Sequence[str]) -> None:
        """The numbered stages, each from the previous one's checkpoint, then ``final/``. Distill and send leave
        in memory exactly what they save (no reload after them); rank 0 runs them and writes, and the other
        ranks then load its finished stage (they would fit the same thing, and race on files)."""
        from stickerconv.pegs.model import PegsModel

        model = PegsModel(config)
        model.profile = self.options.profile  # each checkpoint records it; later stages load it with the weights
        previous: Path | None = None  # the checkpoint the next gradient stage starts from
        for number, stage in enumerate(chosen, 1):
            stage_dir = self.options.out / f"{number:02d}-{stage}"
            if previous is not None:
                model, previous = PegsModel.from_pretrained(previous), None
            if stage in ("distill", "send"):
                with self.state.main_process_first():
                    model = (self.distill if stage == "distill" else self.send)(model, stage_dir, number)
                continue
            self.gradient_stage(model, stage, stage_dir, number, len(chosen))
            previous = stage_dir
        if "send" not in chosen:
            self.emit(StageNotRun("send", "the checkpoint sends only when greedy decoding emits [IMG1]", chosen=False))
        final = self.options.out / FINAL_DIR
        if self.state.is_main_process:
            model.save_pretrained(final)
        self.state.wait_for_everyone()
        self.result.final = final

    def gradient_stage(self, model: PegsModel, stage: str, stage_dir: Path, number: int, of: int) -> None:
        """Train (or resume) one of perception, retrieval, generation and joint into ``stage_dir``."""
        from stickerconv.pegs.train import dialogue_examples, sticker_examples, train_stage

        assert self.library is not None
        options, processes = self.options, self.state.num_processes
        if stage == "joint":
            assert self.samples is not None  # _chosen_stages refuses the joint stage without data
            examples = dialogue_examples(self.samples, self.image_root, model)
        else:
            examples = sticker_examples(self.library, stage)  # type: ignore[arg-type]
        variant = "rag" if model.config.n_ret_tokens > 0 else "gen"  # the paper's joint row for this model
        settings = stage_settings(options, stage, len(examples), processes, variant)
        window = settings.batch_size * settings.grad_accum
        if len(examples) < window * processes:  # the loader drops incomplete windows: no step would end
            raise PipelineError(_too_few(stage, len(examples), settings, processes, options.profile))
        with self.progress(f"stage {number}/{of}: {stage}") as update:
            result = train_stage(model, examples, settings, stage_dir, on_progress=update)
        self.finished(stage, stage_dir, StageTrained(stage, number, stage_dir, result, settings))

    def distill(self, model: PegsModel, stage_dir: Path, number: int) -> PegsModel:
        """Run (or reuse) the distill stage into ``stage_dir``; returns the model with its fitted heads."""
        from stickerconv.pegs.distill import DISTILL_RECORD, distill_retrieval
        from stickerconv.pegs.model import PegsModel

        assert self.samples is not None and self.index is not None  # checked before any stage ran
        record_path = stage_dir / DISTILL_RECORD
        if record_path.is_file():
            self.result.distill = json.loads(record_path.read_text(encoding="utf-8"))
            self.finished("distill", stage_dir, DistillDone(stage_dir, self.result.distill, reused=True))
            return PegsModel.from_pretrained(stage_dir)
        steps, samples = self.options.distill_steps, self.samples
        try:
            with self.progress(f"stage {number}: distill (read {len(samples)} turns, then fit)") as update:
                fitted = distill_retrieval(
                    model,
                    samples,
                    self.image_root,
                    self.index,
                    steps=steps,
                    library=self.options.distill_library,
                    seed=self.options.seed,
                    on_progress=update,
                )
        except (ValueError, FileNotFoundError) as exc:
            raise PipelineError(f"distill stage: {exc}") from None
        model.save_pretrained(stage_dir)
        record = {k: v for k, v in vars(fitted).items() if k != "losses"} | {"steps": steps, "losses": fitted.losses}
        record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")  # last: marks it finished
        self.result.distill = record
        self.finished("distill", stage_dir, DistillDone(stage_dir, record, reused=False))
        return model

    def send(self, model: PegsModel, stage_dir: Path, number: int) -> PegsModel:
        """Run (or reuse) the send stage into ``stage_dir``: the model with its fitted threshold (the weights are
        the previous stage's); ``send.json`` records the fit and marks the stage finished. A finished stage
        fitted to another target or number of turns is fitted again."""
        from stickerconv.pegs.model import PegsModel

        assert self.samples is not None  # checked before any stage ran
        options, samples = self.options, self.samples
        turns = min(options.send_turns, len(samples))
        record_path, replaced = stage_dir / SEND_RECORD, None
        if record_path.is_file():
            fit = SendFit.model_validate_json(record_path.read_text(encoding="utf-8"))
            if fit.target == options.send_fit and fit.turns == turns:
                self.result.send = fit
                self.finished("send", stage_dir, SendDone(stage_dir, fit, reused=True))
                return PegsModel.from_pretrained(stage_dir)
            replaced = fit
        with self.progress(f"stage {number}: send (reply to {turns} turns)") as update:
            fit = _fit_send(model, samples, self.image_root, options.send_fit, options.send_turns, options.seed, update)
        model.save_pretrained(stage_dir)
        record_path.write_text(fit.model_dump_json(indent=1) + "\n", encoding="utf-8")  # last: marks it finished
        self.result.send = fit
        self.finished("send", stage_dir, SendDone(stage_dir, fit, reused=False, replaced=replaced))
        return model


def _too_few(stage: str, examples: int, settings: StageConfig, processes: int, profile: Profile) -> str:
    """Why a stage cannot take one optimiser step, naming only what applies (accumulation, processes, profile)."""
    accumulating = settings.grad_accum > 1
    window = settings.batch_size * settings.grad_accum
    detail = f" ({settings.batch_size} × {settings.grad_accum} accumulated)" if accumulating else ""
    per = f" per process × {processes} processes" if processes > 1 else ""
    under = f" under the {profile} profile" if profile != DEFAULT_PROFILE else ""
    advice = "lower --batch-size or --grad-accum" if accumulating else "lower --batch-size"
    short = f"the {stage} stage has {examples} example(s), fewer than one batch of {window}"
    return f"{short}{detail}{per}{under}; {advice}"


def stage_settings(
    options: PegsTrainingOptions, stage: str, examples: int, processes: int = 1, variant: Literal["gen", "rag"] = "gen"
) -> StageConfig:
    """The :class:`StageConfig` of one gradient stage of ``examples`` examples under ``options`` and its profile
    (see :class:`PegsTrainingOptions`). ``variant``: the paper's joint row, ``rag`` for a model with retrieval
    tokens (4′: batch 3 × 36 accumulated, lr 3e-6), ``gen`` without (4)."""
    from stickerconv.pegs.train import StageConfig, paper_epochs, paper_stage

    paper = options.profile == "paper"
    base: dict[str, Any] = {"stage": stage, "batch_size": DEFAULT_BATCH_SIZE}
    if paper:
        base = paper_stage(stage, variant, sticker_data=True).model_dump()  # type: ignore[arg-type]
    given = {"batch_size": options.batch_size, "grad_accum": options.grad_accum, "lr": options.lr}
    base.update({key: value for key, value in given.items() if value is not None})
    steps = options.joint_steps if stage == "joint" and options.joint_steps is not None else options.steps
    if steps is None and paper:  # the table's epochs over this stage's data, in whole optimiser steps
        window = base["batch_size"] * base.get("grad_accum", 1) * processes
        steps = paper_epochs(stage, variant) * max(1, examples // window)  # type: ignore[arg-type]
    steps = steps or DEFAULT_STEPS
    return StageConfig.model_validate(
        base
        | {
            "max_steps": steps,
            "warmup_steps": base["warmup_steps"] if paper else max(1, steps // 10),
            "seed": options.seed,
            "checkpoint_every": max(1, -(-steps // options.checkpoints)),  # ceil: at most ``checkpoints``
            "head_lr": options.head_lr,
            "mixed_precision": options.mixed_precision,
            "gradient_checkpointing": options.gradient_checkpointing,
            "num_workers": options.num_workers,
        }
    )
