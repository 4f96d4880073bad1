"""``stickerconv pegs ...``: train PEGS stage by stage (stickerconv.pipelines.pegs_training does the work)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from stickerconv.cli.common import JsonOption, ProfileOption, UserError, console, err, progress_bar
from stickerconv.pegs.config import SendFit
from stickerconv.pipelines.pegs_training import (
    DECISIONS,
    PRECISIONS,
    SEND_TARGETS,
    STAGE_ORDER,
    DataLoaded,
    DistillDone,
    FitSendOptions,
    PegsEvent,
    PegsTrainingOptions,
    SendDone,
    StageNotRun,
    StageTrained,
    VisionDone,
    fit_send_threshold,
    train_pegs,
)

pegs_app = typer.Typer(
    help=(
        "Train the PEGS model (vision pretraining, perception, retrieval, generation, joint SFT, distillation, "
        "send threshold)."
    ),
    no_args_is_help=True,
)
TRAIN = PegsTrainingOptions.model_fields
FIT = FitSendOptions.model_fields
SEND_FIT_HELP = (
    "What the send threshold matches on the training turns: share (the gold assistant sticker share; the default) "
    "or f1 (the best when-to-send F1)."
)
SEND_TURNS_HELP = (
    "Training turns the send threshold is fitted on (a seeded sample when there are more; each is a reply)."
)
IMAGE_ROOT_HELP = "Root of the samples' image paths (default: --stickers)."
ImageRootOption = Annotated[Path | None, typer.Option(help=IMAGE_ROOT_HELP)]
SeedOption = Annotated[int, typer.Option()]


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


def _choice(flag: str, value: str, choices: Sequence[str]) -> Any:
    if value not in choices:
        raise UserError(f"{flag} {value!r}: choose from {', '.join(choices)}")
    return value


TRAIN_HELP = """Train the chosen stages in order; each starts from the previous one's checkpoint. Rerun the same
command to resume: a finished stage is loaded, an interrupted one continues from its last checkpoint.

The vision stage pretrains the config's offline CNN when it has no weights (the small preset's)
into OUT/00-vision/ and points every later checkpoint at that file; leave it out of --stages to
keep a random frozen CNN.

The distill stage fits the retrieval heads so that PEGS ranks the stickers for each training turn
as the library's text index ranks them (plus the turn's gold sticker); it needs the library's
index (`stickerconv stickers index`). It also reads --distill-library stickers' emotion and
recommendation sentences as lone messages, so that a few turns are not all the heads learn from.

The send stage fits the send threshold (docs/pegs.md, "The send decision"): the model replies to up to
--send-turns training turns as the responders do, and the threshold on its send score at the end of those
replies is set to match --send-fit. Without it the checkpoint sends only on a greedy [IMG1].

--profile default trains each stage briefly at our settings (200 steps, batch 8, lr 1e-4); --profile paper
takes each stage's row of the paper's table (learning rate, betas, weight decay, warm-up, batch, gradient
accumulation) for its epochs over the stage's data (docs/pegs.md, "Profiles"). --steps, --batch-size,
--grad-accum and --lr, when given, win under either profile.

Many GPUs: `accelerate launch --multi_gpu --num_processes N --no_python stickerconv pegs train ...`
(docs/pegs.md, "Multi-GPU"); --batch-size is per process."""
PresetOption = Annotated[
    str, typer.Option(help="Preset (tiny, small, paper, paper-shapes) or a PEGS config JSON file.")
]
LibraryOption = Annotated[
    Path, typer.Option("--stickers", help="Sticker library: the images and captions of the alignment stages.")
]
RunOption = Annotated[Path, typer.Option("--out", help="Run folder: one checkpoint folder per stage, then final/.")]
DialoguesOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Dialogues for the joint, distill and send stages: samples (data convert --to samples) or "
        "conversations (rendered one sample a turn); any layout, told by content.",
    ),
]
ALL_STAGES = ",".join(STAGE_ORDER)
StagesOption = Annotated[str, typer.Option("--stages", help="Comma-separated stages, in order.")]
StepsOption = Annotated[
    int | None,
    typer.Option(
        "--steps",
        min=1,
        help="Optimiser steps per stage (default: the profile's: 200; paper: the §5.4 epochs over the stage's data).",
    ),
]
JointStepsOption = Annotated[
    int | None,
    typer.Option(
        "--joint-steps",
        min=1,
        help="Steps of the joint stage (default --steps; its dialogue batches are the slow ones).",
    ),
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option("--batch-size", min=1, help="Per process (default: the profile's: 8; paper: the stage's §5.4 batch)."),
]
GradAccumOption = Annotated[
    int | None,
    typer.Option(
        "--grad-accum", min=1, help="Micro-batches per optimiser step (default: the profile's: 1; paper: the stage's)."
    ),
]
LrOption = Annotated[
    float | None, typer.Option("--lr", help="Learning rate (default: the profile's: 1e-4; paper: the stage's).")
]
HeadLrOption = Annotated[
    float | None,
    typer.Option(
        "--head-lr", help="Learning rate of the retrieval heads and mapper (default --lr); 2e-3 suits short CPU runs."
    ),
]
VisionStepsOption = Annotated[
    int,
    typer.Option(
        "--vision-steps", min=1, help="Steps of the vision stage (CNN pretraining; about 0.1-0.2 s each on 2 cores)."
    ),
]
DistillStepsOption = Annotated[
    int,
    typer.Option(
        "--distill-steps", min=1, help="Fitting steps of the distill stage (retrieval heads on cached states; fast)."
    ),
]
CheckpointsOption = Annotated[
    int,
    typer.Option(
        "--checkpoints",
        min=1,
        help="Resumable checkpoints per gradient stage, evenly spaced, the last at its end (1: only at the end).",
    ),
]
DistillLibraryOption = Annotated[
    int,
    typer.Option(
        "--distill-library",
        min=0,
        help="Library stickers whose emotion and recommendation sentences the distill stage also reads as lone "
        "messages (teacher targets only; for configs that read [IMG1] after the prompt). 0: the turns alone.",
    ),
]
SendFitOption = Annotated[str, typer.Option("--send-fit", help=SEND_FIT_HELP)]
SendTurnsOption = Annotated[int, typer.Option("--send-turns", min=2, help=SEND_TURNS_HELP)]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--mixed-precision",
        help="auto (the launcher's fp16/bf16, else bf16 on a CUDA GPU that has it, else none), no, fp16 or bf16.",
    ),
]
CheckpointingOption = Annotated[
    bool,
    typer.Option(help="Recompute the LLM's activations in the backward pass: less GPU memory, more compute."),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--num-workers", min=0, help="DataLoader workers collating batches (default: 0 on a CPU, up to 4 per GPU)."
    ),
]


@pegs_app.command("train", help=TRAIN_HELP)
@_main_process_prints
def train(
    preset: PresetOption,
    stickers: LibraryOption,
    out: RunOption,
    data: DialoguesOption = None,
    stages: StagesOption = ALL_STAGES,
    profile: ProfileOption = TRAIN["profile"].default,
    steps: StepsOption = None,
    joint_steps: JointStepsOption = None,
    batch_size: BatchSizeOption = None,
    grad_accum: GradAccumOption = None,
    lr: LrOption = None,
    head_lr: HeadLrOption = None,
    image_root: ImageRootOption = None,
    seed: SeedOption = TRAIN["seed"].default,
    vision_steps: VisionStepsOption = TRAIN["vision_steps"].default,
    distill_steps: DistillStepsOption = TRAIN["distill_steps"].default,
    distill_library: DistillLibraryOption = TRAIN["distill_library"].default,
    checkpoints: CheckpointsOption = TRAIN["checkpoints"].default,
    send_fit: SendFitOption = TRAIN["send_fit"].default,
    send_turns: SendTurnsOption = TRAIN["send_turns"].default,
    mixed_precision: PrecisionOption = TRAIN["mixed_precision"].default,
    gradient_checkpointing: CheckpointingOption = TRAIN["gradient_checkpointing"].default,
    num_workers: WorkersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train PEGS stage by stage (the help is TRAIN_HELP)."""
    options = PegsTrainingOptions(
        preset=preset,
        stickers=stickers,
        out=out,
        data=data,
        stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
        profile=profile,
        steps=steps,
        joint_steps=joint_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        head_lr=head_lr,
        image_root=image_root,
        seed=seed,
        vision_steps=vision_steps,
        distill_steps=distill_steps,
        distill_library=distill_library,
        checkpoints=checkpoints,
        send_fit=_choice("--send-fit", send_fit, SEND_TARGETS),
        send_turns=send_turns,
        mixed_precision=_choice("--mixed-precision", mixed_precision, PRECISIONS),
        gradient_checkpointing=gradient_checkpointing,
        num_workers=num_workers,
    )
    result = train_pegs(options, progress=progress_bar, on_event=None if as_json else _print_event)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    elif result.final is not None:
        console.print(
            f"PEGS checkpoint ({result.profile} profile): {result.final} (use it with --responder pegs-ret "
            f"--checkpoint {result.final})"
        )


@pegs_app.command("fit-send")
def fit_send(
    checkpoint: Annotated[Path, typer.Option(help="A PEGS checkpoint folder; its pegs_config.json is rewritten.")],
    data: Annotated[Path, typer.Option(help="Its training dialogues: samples or conversations, as for train.")],
    stickers: Annotated[Path, typer.Option(help="Sticker library the dialogues' stickers resolve in.")],
    image_root: ImageRootOption = None,
    target: Annotated[str, typer.Option(help=SEND_FIT_HELP)] = FIT["target"].default,
    turns: Annotated[int, typer.Option(min=2, help=SEND_TURNS_HELP)] = FIT["turns"].default,
    decision: Annotated[
        str, typer.Option(help="threshold (the fitted threshold decides) or greedy (only a greedy [IMG1] sends).")
    ] = FIT["decision"].default,
    seed: SeedOption = FIT["seed"].default,
    as_json: JsonOption = False,
) -> None:
    """Fit the send threshold of an existing checkpoint and set its decision mode, in place: for checkpoints
    trained before the send stage existed, or to refit the threshold to another target."""
    if decision not in DECISIONS:
        raise UserError(f"--decision {decision!r}: choose threshold or greedy")
    options = FitSendOptions(
        checkpoint=checkpoint,
        data=data,
        stickers=stickers,
        image_root=image_root,
        target=_choice("--target", target, SEND_TARGETS),
        turns=turns,
        decision=decision,  # type: ignore[arg-type]
        seed=seed,
    )
    result = fit_send_threshold(options, progress=progress_bar)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    _print_event(result.data)
    _print_send(result.fit)
    console.print(f"send decision {result.decision}: written to {result.config_file}")


def _print_event(event: PegsEvent) -> None:
    """One step of a training run, as it finishes."""
    if isinstance(event, StageNotRun):
        console.print(
            f"skipping the {event.stage} stage: {event.why}" if event.chosen else f"no {event.stage} stage: {event.why}"
        )
    elif isinstance(event, DataLoaded):
        rendered = f" -> {event.samples:,} samples (one a turn, {event.rendered_style} style)"
        console.print(event.description + (rendered if event.rendered_style else ""))
    elif isinstance(event, VisionDone):
        result = event.result
        how = "reused" if result.reused else f"{result.seconds:.0f} s"
        for file, losses in result.losses.items():
            console.print(f"vision: {file} {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f} ({how})")
    elif isinstance(event, StageTrained):
        tenth, first, last = event.loss_means()
        cfg = event.settings
        console.print(
            f"{event.stage}: {event.result.steps} steps (lr {cfg.lr:g}, batch {cfg.batch_size} × {cfg.grad_accum}), "
            f"loss {first:.3f} -> {last:.3f} (means of the first and last {tenth} step(s)); "
            f"checkpoint {event.stage_dir}"
        )
    elif isinstance(event, DistillDone):
        _print_distill(event)
    elif isinstance(event, SendDone):
        if event.replaced is not None:
            was = event.replaced
            console.print(f"send: {event.stage_dir} was fitted to {was.target} on {was.turns} turns; fitting again")
        if event.reused:
            console.print(f"send: reusing the finished stage in {event.stage_dir}")
        _print_send(event.fit)


def _print_distill(event: DistillDone) -> None:
    record = event.record
    if event.reused:
        console.print(f"distill: reusing the finished stage in {event.stage_dir} ({record['turns']} turns)")
        return
    losses, steps = record["losses"], record["steps"]
    tenth = max(1, steps // 10)
    first, last = (sum(part) / len(part) for part in (losses[:tenth], losses[-tenth:]))
    for reason, count in record["left_out"].items():
        console.print(f"distill: {count} gold sticker(s) left out of the gold term: {reason}")
    console.print(
        f"distill: {record['turns']} turns ({record['gold']} with a gold sticker), "
        f"{record.get('library', 0)} library readings, {steps} steps, loss {first:.3f} -> "
        f"{last:.3f}; top-10 overlap with the index {record['overlap_before']:.2f} -> "
        f"{record['overlap_after']:.2f} ({record['seconds']:.0f} s); checkpoint {event.stage_dir}"
    )


def _print_send(fit: SendFit) -> None:
    console.print(
        f"send threshold {fit.threshold:.3f} on log p([IMG1]) - log p(EOS) at the reply's end, fitted to "
        f"{fit.target}: sends on {fit.share:.1%} of {fit.turns} training turns (gold share {fit.gold_share:.1%}); "
        f"training when-to-send F1 {fit.f1:.3f} (precision {fit.precision:.3f}, recall {fit.recall:.3f})"
    )
