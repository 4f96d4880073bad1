"""``stickerconv pegs ...``: train PEGS stage by stage."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stickerconv.cli.common import UserError, console, err, progress_bar

if TYPE_CHECKING:
    from stickerconv.data.io import DataSource
    from stickerconv.data.samples import Sample
    from stickerconv.pegs.config import PegsConfig, SendFit
    from stickerconv.pegs.model import PegsModel
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.library import StickerLibrary

pegs_app = typer.Typer(
    help=(
        "Train the PEGS model (vision pretraining, perception, retrieval, generation, joint SFT, distillation, "
        "send threshold)."
    ),
    no_args_is_help=True,
)
STAGE_ORDER = ("vision", "perception", "retrieval", "generation", "joint", "distill", "send")
VISION_DIR = "00-vision"  # before the numbered model stages, whichever of them run
DATA_STAGES = ("joint", "distill", "send")  # the stages that read the dialogues of --data
SEND_RECORD = "send.json"  # written last into the send stage's folder: its presence marks the stage finished
SEND_TARGETS = ("share", "f1")
SEND_FIT_HELP = (
    "What the send threshold matches on the training turns: share (the gold assistant sticker share; the default) "
    "or f1 (the best when-to-send F1)."
)
SEND_TURNS_HELP = (
    "Training turns the send threshold is fitted on (a seeded sample when there are more; each is a reply)."
)
PRECISIONS = ("auto", "no", "fp16", "bf16")


def _main_process_prints(command: Callable[..., Any]) -> Callable[..., Any]:
    """Under ``accelerate launch`` every rank runs the command; only rank 0 prints (lines and progress bars), so
    the terminal shows one copy. A failing rank prints its error all the same: the consoles are restored before
    the error reaches the command line's handler."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from stickerconv.pegs.train import process_state

        if process_state().is_main_process:
            return command(*args, **kwargs)
        console.quiet = err.quiet = True
        try:
            return command(*args, **kwargs)
        finally:
            console.quiet = err.quiet = False

    return run


@pegs_app.command("train")
@_main_process_prints
def train(
    config: Annotated[str, typer.Option(help="Preset (tiny, small, paper, paper-shapes) or a PEGS config JSON file.")],
    stickers: Annotated[Path, typer.Option(help="Sticker library: the images and captions of the alignment stages.")],
    out: Annotated[Path, typer.Option(help="Run folder: one checkpoint folder per stage, then final/.")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dialogues for the joint, distill and send stages: samples (data convert --to samples) or "
            "conversations (rendered one sample a turn); any layout, told by content."
        ),
    ] = None,
    stages: Annotated[str, typer.Option(help="Comma-separated stages, in order.")] = ",".join(STAGE_ORDER),
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps per stage.")] = 200,
    joint_steps: Annotated[
        int | None,
        typer.Option(min=1, help="Steps of the joint stage (default --steps; its dialogue batches are the slow ones)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the stage's).")] = None,
    head_lr: Annotated[
        float | None,
        typer.Option(help="Learning rate of the retrieval heads and mapper (default --lr); 2e-3 suits short CPU runs."),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Root of the samples' image paths (default: --stickers).")
    ] = None,
    seed: Annotated[int, typer.Option()] = 42,
    vision_steps: Annotated[
        int, typer.Option(min=1, help="Steps of the vision stage (CNN pretraining; about 0.1-0.2 s each on 2 cores).")
    ] = 300,
    distill_steps: Annotated[
        int, typer.Option(min=1, help="Fitting steps of the distill stage (retrieval heads on cached states; fast).")
    ] = 1000,
    send_fit: Annotated[str, typer.Option(help=SEND_FIT_HELP)] = "share",
    send_turns: Annotated[int, typer.Option(min=2, help=SEND_TURNS_HELP)] = 128,
    mixed_precision: Annotated[
        str,
        typer.Option(
            help="auto (the launcher's fp16/bf16, else bf16 on a CUDA GPU that has it, else none), no, fp16 or bf16."
        ),
    ] = "auto",
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute the LLM's activations in the backward pass: less GPU memory, more compute.")
    ] = False,
    num_workers: Annotated[
        int | None,
        typer.Option(min=0, help="DataLoader workers collating batches (default: 0 on a CPU, up to 4 per GPU)."),
    ] = None,
) -> None:
    """Train the chosen stages in order; each starts from the previous one's checkpoint. Rerun the same
    command to resume: a finished stage is loaded, an interrupted one continues from its last checkpoint.

    The vision stage pretrains the config's offline CNN when it has no weights (the small preset's)
    into OUT/00-vision/ and points every later checkpoint at that file; leave it out of --stages to
    keep a random frozen CNN.

    The distill stage fits the retrieval heads so that PEGS ranks the stickers for each training turn
    as the library's text index ranks them (plus the turn's gold sticker); it needs the library's
    index (`stickerconv stickers index`).

    The send stage fits the send threshold (docs/pegs.md, "The send decision"): the model replies to up to
    --send-turns training turns as the responders do, and the threshold on its send score at the end of those
    replies is set to match --send-fit. Without it the checkpoint sends only on a greedy [IMG1].

    Many GPUs: `accelerate launch --multi_gpu --num_processes N --no_python stickerconv pegs train ...`
    (docs/pegs.md, "Multi-GPU"); --batch-size is per process."""
    from stickerconv.pegs.config import PRESETS, PegsConfig
    from stickerconv.pegs.model import PegsModel
    from stickerconv.pegs.train import (
        StageConfig,
        dialogue_examples,
        process_state,
        sticker_examples,
        train_stage,
        untrained_cnns,
    )
    from stickerconv.stickers.library import StickerLibrary

    if send_fit not in SEND_TARGETS:
        raise UserError(f"--send-fit {send_fit!r}: choose from {', '.join(SEND_TARGETS)}")
    if mixed_precision not in PRECISIONS:
        raise UserError(f"--mixed-precision {mixed_precision!r}: choose from {', '.join(PRECISIONS)}")
    state = process_state()  # launched: every rank runs the gradient stages; rank 0 alone runs and writes the rest
    chosen = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STAGE_ORDER]
    if unknown or not chosen:
        raise UserError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGE_ORDER)}")
    for stage in DATA_STAGES:
        if stage in chosen and data is None:
            raise UserError(
                f"the {stage} stage trains on dialogues: give --data SAMPLES (stickerconv data convert --to samples) "
                "or --data CONVERSATIONS"
            )
    source = None
    if data is not None:
        from stickerconv.data.io import open_source

        source = open_source(data, ("samples", "conversations"))  # a wrong file fails before anything loads
    pegs_config = PegsConfig.preset(config) if config in PRESETS else PegsConfig.load(Path(config))
    if "generation" in chosen and pegs_config.sd is None:
        console.print("skipping the generation stage: the config has no Stable Diffusion section")
        chosen.remove("generation")
    if "distill" in chosen and pegs_config.n_ret_tokens == 0:
        console.print("skipping the distill stage: the config has no retrieval tokens")
        chosen.remove("distill")
    library = StickerLibrary.load(stickers)
    index = _distill_index(library) if "distill" in chosen else None  # checked before any training
    samples = _load_samples(source, library, pegs_config) if source is not None else None
    if "vision" in chosen:
        chosen.remove("vision")
        with state.main_process_first():  # rank 0 pretrains; the other ranks then reuse its finished stage
            pegs_config = _pretrain_vision(pegs_config, library, out / VISION_DIR, vision_steps, seed)
    elif untrained_cnns(pegs_config):
        console.print("no vision stage: the CNN stays randomly initialised and frozen")
    if not chosen:
        return
    model = PegsModel(pegs_config)
    previous: Path | None = None  # the checkpoint the next gradient stage starts from
    for number, stage in enumerate(chosen, 1):
        stage_dir = out / f"{number:02d}-{stage}"
        if previous is not None:
            model = PegsModel.from_pretrained(previous)
            previous = None
        # distill and send leave in memory exactly what they save: no reload after them. Rank 0 runs them and
        # writes; the other ranks then load its finished stage (they would fit the same thing, and race on files)
        if stage == "distill":
            assert samples is not None and index is not None  # checked above
            with state.main_process_first():
                model = _distill(model, samples, image_root or stickers, index, stage_dir, distill_steps, seed, number)
            continue
        if stage == "send":
            assert samples is not None  # checked above
            with state.main_process_first():
                model = _send(model, samples, image_root or stickers, stage_dir, send_fit, send_turns, seed, number)
            continue
        examples = (
            dialogue_examples(samples, image_root or stickers, model)
            if stage == "joint"
            else sticker_examples(library, stage)
        )
        if len(examples) < batch_size * state.num_processes:  # the loader drops incomplete batches: none would end
            per = f" per process × {state.num_processes} processes" if state.num_processes > 1 else ""
            raise UserError(
                f"the {stage} stage has {len(examples)} example(s), fewer than one batch of {batch_size}{per}; "
                "lower --batch-size or give more data"
            )
        n_steps = joint_steps if stage == "joint" and joint_steps is not None else steps
        settings = StageConfig(
            stage=stage,
            max_steps=n_steps,
            batch_size=batch_size,
            warmup_steps=max(1, n_steps // 10),
            seed=seed,
            checkpoint_every=max(1, n_steps // 4),
            head_lr=head_lr,
            mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing,
            num_workers=num_workers,
            **({"lr": lr} if lr is not None else {}),
        )
        with progress_bar(f"stage {number}/{len(chosen)}: {stage}") as update:
            result = train_stage(model, examples, settings, stage_dir, on_progress=update)
        tenth = max(1, len(result.losses) // 10)  # single steps are noisy: compare the first and last tenths
        first, last = (sum(part) / len(part) for part in (result.losses[:tenth], result.losses[-tenth:]))
        console.print(
            f"{stage}: {result.steps} steps, loss {first:.3f} -> {last:.3f} (means of the first and last "
            f"{tenth} step(s)); checkpoint {stage_dir}"
        )
        previous = stage_dir
    if "send" not in chosen:
        console.print("no send stage: the checkpoint sends only when greedy decoding emits [IMG1]")
    final = out / "final"
    if state.is_main_process:
        model.save_pretrained(final)
    state.wait_for_everyone()
    console.print(f"PEGS checkpoint: {final} (use it with --responder pegs-ret --checkpoint {final})")


@pegs_app.command("fit-send")
def fit_send(
    checkpoint: Annotated[Path, typer.Option(help="A PEGS checkpoint folder; its pegs_config.json is rewritten.")],
    data: Annotated[Path, typer.Option(help="Its training dialogues: samples or conversations, as for train.")],
    stickers: Annotated[Path, typer.Option(help="Sticker library the dialogues' stickers resolve in.")],
    image_root: Annotated[
        Path | None, typer.Option(help="Root of the samples' image paths (default: --stickers).")
    ] = None,
    target: Annotated[str, typer.Option(help=SEND_FIT_HELP)] = "share",
    turns: Annotated[int, typer.Option(min=2, help=SEND_TURNS_HELP)] = 128,
    decision: Annotated[
        str, typer.Option(help="threshold (the fitted threshold decides) or greedy (only a greedy [IMG1] sends).")
    ] = "threshold",
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Fit the send threshold of an existing checkpoint and set its decision mode, in place: for checkpoints
    trained before the send stage existed, or to refit the threshold to another target."""
    from stickerconv.data.io import open_source
    from stickerconv.pegs.config import SendConfig
    from stickerconv.pegs.model import CONFIG_FILE, PegsModel
    from stickerconv.stickers.library import StickerLibrary

    if target not in SEND_TARGETS:
        raise UserError(f"--target {target!r}: choose from {', '.join(SEND_TARGETS)}")
    if decision not in ("threshold", "greedy"):
        raise UserError(f"--decision {decision!r}: choose threshold or greedy")
    if not (checkpoint / CONFIG_FILE).is_file():
        raise UserError(f"{checkpoint}: not a PEGS checkpoint (no {CONFIG_FILE})")
    source = open_source(data, ("samples", "conversations"))
    model = PegsModel.from_pretrained(checkpoint)
    model.config = model.config.model_copy(update={"send": SendConfig(decision=decision)})  # type: ignore[arg-type]
    samples = _load_samples(source, StickerLibrary.load(stickers), model.config)
    _report_send(_fit_send(model, samples, image_root or stickers, target, turns, seed, "send threshold"))
    model.config.save(checkpoint / CONFIG_FILE)  # the threshold lives in the config: the weights are unchanged
    console.print(f"send decision {decision}: written to {checkpoint / CONFIG_FILE}")


def _fit_send(
    model: PegsModel, samples: list[Sample], image_root: Path, target: str, turns: int, seed: int, title: str
) -> SendFit:
    """Reply to up to ``turns`` training turns and give ``model`` the threshold fitted on those replies."""
    from stickerconv.pegs.send import fit_send

    try:
        with progress_bar(f"{title} (reply to {min(turns, len(samples))} turns)") as update:
            return fit_send(
                model,
                samples,
                image_root,
                target,
                limit=turns,
                seed=seed,
                on_progress=update,  # type: ignore[arg-type]
            )
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"send threshold: {exc}") from None


def _send(
    model: PegsModel,
    samples: list[Sample],
    image_root: Path,
    stage_dir: Path,
    target: str,
    turns: int,
    seed: int,
    number: int,
) -> PegsModel:
    """Run (or reuse) the send stage into ``stage_dir``: the model with its fitted threshold (the weights are
    the previous stage's); ``send.json`` records the fit and marks the stage finished. A finished stage fitted
    to another target or number of turns is fitted again."""
    import json

    from stickerconv.pegs.config import SendFit
    from stickerconv.pegs.model import PegsModel

    record_path = stage_dir / SEND_RECORD
    if record_path.is_file():
        fit = SendFit.model_validate(json.loads(record_path.read_text(encoding="utf-8")))
        if fit.target == target and fit.turns == min(turns, len(samples)):
            console.print(f"send: reusing the finished stage in {stage_dir}")
            _report_send(fit)
            return PegsModel.from_pretrained(stage_dir)
        console.print(f"send: {stage_dir} was fitted to {fit.target} on {fit.turns} turns; fitting again")
    fit = _fit_send(model, samples, image_root, target, turns, seed, f"stage {number}: send")
    model.save_pretrained(stage_dir)
    record_path.write_text(fit.model_dump_json(indent=1) + "\n", encoding="utf-8")  # last: marks it finished
    _report_send(fit)
    return model


def _report_send(fit: SendFit) -> None:
    console.print(
        f"send threshold {fit.threshold:.3f} on log p([IMG1]) - log p(EOS) at the reply's end, fitted to "
        f"{fit.target}: sends on {fit.share:.1%} of {fit.turns} training turns (gold share {fit.gold_share:.1%}); "
        f"training when-to-send F1 {fit.f1:.3f} (precision {fit.precision:.3f}, recall {fit.recall:.3f})"
    )


def _load_samples(source: DataSource, library: StickerLibrary, config: PegsConfig) -> list[Sample]:
    """The training samples, and one line saying what was read; conversations are rendered in the model's
    prompt style with library-relative image paths, as `data convert --to samples --stickers` would."""
    from stickerconv.data.convert import ImageLocator
    from stickerconv.data.resolve import StickerResolver
    from stickerconv.data.samples import load_samples

    samples = load_samples(source, config.style, ImageLocator(StickerResolver(library)).path)
    rendered = (
        f" -> {len(samples):,} samples (one a turn, {config.style} style)" if source.kind == "conversations" else ""
    )
    console.print(source.describe() + rendered)
    if not samples:
        raise UserError(f"{source.name}: no dialogue turns to train on")
    return samples


def _pretrain_vision(config: PegsConfig, library: StickerLibrary, out: Path, steps: int, seed: int) -> PegsConfig:
    """Run (or reuse) the vision stage; returns the config whose CNN loads the pretrained weights."""
    from stickerconv.pegs.train import untrained_cnns, vision_stage
    from stickerconv.stickers.embed import load_embedder

    if not untrained_cnns(config):
        console.print("skipping the vision stage: the config has no CNN without weights to pretrain")
        return config
    try:
        with progress_bar("stage 0: vision (CNN pretraining)") as update:
            result = vision_stage(
                config, library, out, load_embedder("minilm").embed, steps, seed=seed, on_progress=update
            )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for file, losses in result.losses.items():
        how = "reused" if result.reused else f"{result.seconds:.0f} s"
        console.print(f"vision: {file} {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f} ({how})")
    return result.config


def _distill_index(library: StickerLibrary) -> StickerIndex:
    """The library's text index, the distill stage's teacher; a clear error when it has none."""
    from stickerconv.stickers.index import StickerIndex, StickerIndexError

    try:
        return StickerIndex.load(library)
    except StickerIndexError as exc:
        raise UserError(f"the distill stage ranks stickers with the library's text index: {exc}") from None


def _distill(
    model: PegsModel,
    samples: list[Sample],
    image_root: Path,
    index: StickerIndex,
    stage_dir: Path,
    steps: int,
    seed: int,
    number: int,
) -> PegsModel:
    """Run (or reuse) the distill stage into ``stage_dir``; returns the model with its fitted heads."""
    import json

    from stickerconv.pegs.distill import DISTILL_RECORD, distill_retrieval
    from stickerconv.pegs.model import PegsModel

    record_path = stage_dir / DISTILL_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        console.print(f"distill: reusing the finished stage in {stage_dir} ({record['turns']} turns)")
        return PegsModel.from_pretrained(stage_dir)
    try:
        with progress_bar(f"stage {number}: distill (read {len(samples)} turns, then fit)") as update:
            result = distill_retrieval(model, samples, image_root, index, steps=steps, seed=seed, on_progress=update)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"distill stage: {exc}") from None
    model.save_pretrained(stage_dir)
    record = {k: v for k, v in vars(result).items() if k != "losses"} | {"steps": steps, "losses": result.losses}
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")  # last: marks it finished
    tenth = max(1, steps // 10)
    first, last = (sum(part) / len(part) for part in (result.losses[:tenth], result.losses[-tenth:]))
    for reason, count in result.left_out.items():
        console.print(f"distill: {count} gold sticker(s) left out of the gold term: {reason}")
    console.print(
        f"distill: {result.turns} turns ({result.gold} with a gold sticker), {steps} steps, loss {first:.3f} -> "
        f"{last:.3f}; top-10 overlap with the index {result.overlap_before:.2f} -> {result.overlap_after:.2f} "
        f"({result.seconds:.0f} s); checkpoint {stage_dir}"
    )
    return model
