"""PEGS at the paper's shapes on one GPU (issue 18): every training stage at the paper's batch sizes, and the
latency of PEGS-Ret, PEGS-Gen and PEGS-RAG replies.

    .venv/bin/python bench/pegs_gpu.py --json runs/pegs_gpu.json              # one H100: planned for < 8 minutes
    .venv/bin/python bench/pegs_gpu.py --shrink --json /tmp/pegs_gpu.json     # CPU: same code path, seconds

The model is the ``paper-shapes`` preset: Llama-7B (fp16, 32,000 symbols), BLIP-2 opt-2.7b's ViT-g + Q-Former
(32 x 768), CLIP ViT-L/14 and SD-1.5 (77 x 768), all with random weights, so nothing downloads and nothing
outside this repository is read. ``--shrink`` runs ``paper_shapes(shrink=True)``: the same classes and code
path at CPU sizes, with smaller batches and fewer steps (its figures check the bench, not the paper's costs).

Training: ``train_stage`` (pegs/train.py) for perception, retrieval, generation and joint with RAG (retrieval
and generation tokens both on), each with ``paper_stage``'s optimiser settings and batch sizes (method reference
§5.4: 32, 36, 32, and 3 with 36 accumulation micro-batches for joint RAG), on examples built as ``pegs train``
builds them from a sticker library (drawn here unless ``--stickers`` names one) and from dialogues whose
sequences fill ``max_length``. Per stage, after W warm-up optimiser steps, T steps are timed (the median is the
step time), then one step warms the profiler up and P steps are profiled with ``torch.profiler``: the share of
their wall time spent in CUDA kernels on a GPU, or in CPU operators' self time on a CPU (labelled as such). The
checkpoint ``train_stage`` writes after its last step is outside both windows. Tokens/s and images/s count the
non-padding positions and the images through the frozen encoders (user stickers and retrieval targets) of one
optimiser step over its median time. Peak memory: CUDA's max allocated, or the process's peak RSS (VmHWM, reset
per stage where the kernel allows), read at the stage's last step, before its checkpoint. On a CPU torch runs one
thread (``--threads``): on a shared small machine more threads spin against the other processes.

Replies: the trained model answers fresh single-turn contexts with a user sticker through ``PegsResponder``,
with a send threshold below every score so that every reply carries a sticker; the first reply of each
responder warms up and is not counted. PEGS-Gen and PEGS-RAG paint at the config's size, steps and guidance
(512 px, 50 steps, 7.5 for ``paper-shapes``); the image time is the painter's call alone. Decoded tokens are the
LLM's forward calls during a reply minus its one reading of the reply's end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from stickerconv.data.samples import render_samples
from stickerconv.pegs.config import PegsConfig, SendConfig, SendFit, paper_shapes
from stickerconv.pegs.diffusion import load_sd
from stickerconv.pegs.model import WEIGHTS_FILE, PegsModel
from stickerconv.pegs.sequence import Example
from stickerconv.pegs.train import Stage, StageConfig, dialogue_examples, paper_stage, sticker_examples, train_stage
from stickerconv.responders.pegs import PegsResponder
from stickerconv.schema import EMOTION_LABELS, Conversation, DialogueContext, Sticker, Turn
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger("bench.pegs_gpu")

STAGES: tuple[Stage, ...] = ("perception", "retrieval", "generation", "joint")
MODES = ("ret", "gen", "rag")


@dataclass(frozen=True)
class Plan:
    """How much of each part runs: steps per stage (warm-up, timed, profiled) and replies per responder."""

    steps: dict[str, tuple[int, int, int]]
    batches: dict[str, tuple[int, int]]  # stage -> (micro-batch, accumulation)
    replies: int  # measured replies per responder, after one warm-up reply
    stickers: int  # size of the drawn library


def full_plan() -> Plan:
    """The paper's batch sizes, with steps planned to keep a whole run under 8 minutes on one H100: joint RAG
    takes 108 sequences of about 1,020 tokens per optimiser step (about 3 PFLOP, some seconds), the alignment
    stages a fraction of a second; the random init of 8.1 B parameters on the host's CPU (50 M/s on a loaded
    2-core machine) and three SD-1.5 builds are the uncertain part, so the steps are few."""
    batches = {}
    for stage in STAGES:
        cfg = paper_stage(stage, "rag")
        batches[stage] = (cfg.batch_size, cfg.grad_accum)
    steps = {"perception": (2, 5, 2), "retrieval": (2, 5, 2), "generation": (2, 5, 2), "joint": (1, 3, 1)}
    return Plan(steps=steps, batches=batches, replies=2, stickers=96)


def shrink_plan() -> Plan:
    """Small batches and few steps for the shrunk model on a CPU (seconds in all)."""
    batches = {"perception": (8, 1), "retrieval": (8, 1), "generation": (8, 1), "joint": (3, 2)}
    return Plan(steps=dict.fromkeys(STAGES, (1, 3, 1)), batches=batches, replies=2, stickers=24)


# ----- data -----

SHAPES = ("ellipse", "square", "triangle", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (50, 90, 220), "yellow": (240, 200, 30)}
USER = [
    "I failed my driving test again today and I do not know how to tell my parents about it.",
    "We finally won the championship after three years of losing in the final round!",
    "My cat has been missing since Sunday and the house feels completely empty without her.",
    "I can't stop worrying about tomorrow's surgery, even though the doctor says it is routine.",
]
SYSTEM = [
    "That sounds really hard. It is only one test, and you can take it again when you feel ready.",
    "Congratulations! All those seasons of hard work paid off, you must be so proud of the team.",
    "I'm so sorry. Have you asked the neighbours and put up posters around the block yet?",
    "It is natural to worry before an operation. Would it help to talk through what will happen?",
]


def draw_library(root: Path, n: int) -> StickerLibrary:
    """``n`` stickers drawn with PIL (a coloured shape on a transparent 256 px canvas) with descriptions and
    labels: the bench needs no emoji assets, only images of the size real stickers have."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    stickers = []
    colours = list(COLOURS.items())
    for i in range(n):
        shape, (colour, rgb) = SHAPES[i % len(SHAPES)], colours[(i // len(SHAPES)) % len(colours)]
        label = EMOTION_LABELS[i % len(EMOTION_LABELS)]
        image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        box = (24 + i % 7 * 4, 24 + i % 5 * 4, 232 - i % 3 * 6, 232 - i % 4 * 5)
        if shape == "ellipse":
            draw.ellipse(box, fill=(*rgb, 255))
        elif shape == "square":
            draw.rectangle(box, fill=(*rgb, 255))
        elif shape == "triangle":
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=(*rgb, 255))
        else:
            mid = ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
            draw.polygon([(mid[0], box[1]), (box[2], mid[1]), (mid[0], box[3]), (box[0], mid[1])], fill=(*rgb, 255))
        name = f"images/s{i:03d}.png"
        image.save(root / name)
        description = f"a {colour} {shape} sticker number {i} that feels {label.lower()}"
        stickers.append(Sticker(image=name, description=description, label=label))
    library = StickerLibrary(root, stickers)
    library.save()
    return library


def _conversation(library: StickerLibrary, index: int, turns: int) -> Conversation:
    """``turns`` turns; a user sticker on odd turns and a system sticker on every turn (so the last turn's
    response always has a target sticker); stickers rotate with ``index``, the texts do not (equal lengths)."""
    s = library.stickers
    out = []
    for t in range(turns):
        out.append(
            Turn(
                turn=t + 1,
                user_message=USER[t % len(USER)],
                system_message=SYSTEM[t % len(SYSTEM)],
                user_sticker=s[(index * 3 + t) % len(s)] if t % 2 == 0 else None,
                system_sticker=s[(index * 5 + t + 1) % len(s)],
            )
        )
    return Conversation(conversation=out, user_persona="a student", user_status="tired")


def joint_examples(model: PegsModel, library: StickerLibrary, count: int) -> list[Example]:
    """``count`` joint-training examples (the last per-turn sample of a dialogue, as ``pegs train`` renders
    them), each as long as ``max_length`` allows with its target block and EOS kept: the paper trains on
    dialogues up to that length, and shorter ones would understate the step's cost."""
    cfg = model.config
    collate = model.collator()

    def last_sample(index: int, turns: int) -> Example:
        samples = render_samples(_conversation(library, index, turns), cfg.style, lambda st: st.image)
        return dialogue_examples(samples[-1:], library.root, model)[0]

    if int(collate([last_sample(0, 1)]).attention_mask.sum()) >= cfg.max_length:
        raise ValueError(f"max_length {cfg.max_length} does not hold one dialogue turn with its sticker block")
    turns = 1
    while True:  # the texts are equal in every dialogue, so one dialogue's length is every dialogue's
        batch = collate([last_sample(0, turns + 1)])
        if int(batch.attention_mask.sum()) >= cfg.max_length:  # truncated: the target block would go
            break
        turns += 1
        if turns > 64:
            raise ValueError(f"dialogues never reach max_length {cfg.max_length}")
    log.info("joint examples: %d turns each", turns)
    return [last_sample(i, turns) for i in range(count)]


def stage_examples(stage: Stage, model: PegsModel, library: StickerLibrary, count: int) -> list[Example]:
    """At least ``count`` examples of ``stage``, as ``pegs train`` builds them (sticker pairs are repeated over
    the library when it is smaller)."""
    if stage == "joint":
        return joint_examples(model, library, count)
    template = model.config.sd.caption_template if model.config.sd is not None else "{description}"
    pairs = sticker_examples(library, stage, template)
    return [pairs[i % len(pairs)] for i in range(max(count, len(pairs)))]


# ----- measuring -----


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> str:
    """Start a new peak-memory window; returns what the peak will mean."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "CUDA max allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return "RSS peak (VmHWM, reset per part)"
    except OSError:
        return "RSS peak of the whole process"


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StepClock:
    """``on_progress`` of ``train_stage``: the wall time of every optimiser step, and the profiler's steps.

    Step k runs from the return of the callback for step k-1 to the call for step k, after a device sync, so
    neither the callback nor the profiler's own bookkeeping counts; step 1 includes the stage's setup and is
    never measured. The peak memory is read at every step too: the last reading comes before the checkpoint."""

    device: torch.device
    profiler: Any | None = None
    starts: list[float] = field(default_factory=list)  # after the callback of step k (k = 1, 2, ...)
    durations: list[float] = field(default_factory=list)  # step k+1 (k = 1, 2, ...)
    peak: float = 0.0  # MiB: the peak so far, as of the last step's end

    def __call__(self, step: int, total: int) -> None:
        sync(self.device)
        end = time.perf_counter()
        self.peak = peak_mib(self.device)
        if self.starts:
            self.durations.append(end - self.starts[-1])
        if self.profiler is not None:
            self.profiler.step()
        self.starts.append(time.perf_counter())


def busy_seconds(events: Any, device: torch.device) -> float:
    """Kernel time in a profile: CUDA kernels' self time on a GPU (as torch's own table totals it: device
    events that are not user annotations), CPU operators' self time on a CPU; in seconds."""
    from torch.autograd import DeviceType

    kind = DeviceType.CUDA if device.type == "cuda" else DeviceType.CPU
    total = 0.0
    for evt in events:
        if evt.device_type != kind or evt.is_user_annotation:
            continue
        total += evt.self_device_time_total if kind == DeviceType.CUDA else evt.self_cpu_time_total
    return total / 1e6  # microseconds


def per_example(model: PegsModel, examples: list[Example]) -> tuple[float, float]:
    """Mean non-padding positions and images through the frozen encoders (user stickers + retrieval targets)
    per example, from the collator itself (first 64 examples)."""
    sample = examples[:64]
    batch = model.collator()(sample)
    tokens = float(batch.attention_mask.sum()) / len(sample)
    images = (batch.pixels.shape[0] + batch.target_pixels.shape[0]) / len(sample)
    return tokens, images


def run_stage(
    stage: Stage,
    model: PegsModel,
    library: StickerLibrary,
    plan: Plan,
    out_dir: Path,
    device: torch.device,
    sd: Any | None,
) -> dict[str, Any]:
    """One stage through ``train_stage``: W warm-up, T timed, 1 profiler warm-up and P profiled steps. ``sd`` is
    the frozen SD side, passed to the stages with L_gen, as ``train_stage`` would load it for them."""
    from torch.profiler import ProfilerActivity, profile, schedule

    warm, timed, profiled = plan.steps[stage]
    batch, accum = plan.batches[stage]
    per_step = batch * accum
    examples = stage_examples(stage, model, library, 2 * per_step)  # two optimiser steps per epoch
    tokens, images = per_example(model, examples)
    total = warm + timed + 1 + profiled
    cfg = StageConfig.model_validate(
        {
            **paper_stage(stage, "rag").model_dump(),  # the paper's optimiser settings and batch sizes
            "batch_size": batch,
            "grad_accum": accum,
            "max_steps": total,
            "checkpoint_every": 10**9,  # only the final save, after the measured steps
            "log_every": 10**9,
            # the LLM is fp16 itself, as paper's: no autocast on top (fp16 AMP would refuse its fp16 gradients)
            "mixed_precision": "no",
        }
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    captured: dict[str, float] = {}

    def on_trace(prof: Any) -> None:
        captured["busy_s"] = busy_seconds(prof.key_averages(), device)

    prof = profile(
        activities=activities,
        schedule=schedule(wait=warm + timed, warmup=1, active=profiled, repeat=1),
        on_trace_ready=on_trace,
    )
    clock = StepClock(device, prof)
    memory_kind = reset_peak(device)
    log.info("%s: %d examples, batch %d x %d, %d steps", stage, len(examples), batch, accum, total)
    start = time.perf_counter()
    with prof:
        result = train_stage(model, examples, cfg, out_dir, sd=sd, on_progress=clock)
    wall_s = time.perf_counter() - start
    log.info("%s: %.1f s in all (setup, %d steps, profiling, checkpoint)", stage, wall_s, total)
    durations = clock.durations  # steps 2..total
    measured = durations[warm - 1 : warm - 1 + timed]
    profiled_wall = sum(durations[warm + timed :])
    step_s = statistics.median(measured)
    return {
        "stage": stage,
        "batch_size": batch,
        "grad_accum": accum,
        "tokens_per_example": round(tokens, 1),
        "images_per_example": round(images, 2),
        "steps": {"warmup": warm, "timed": timed, "profiler_warmup": 1, "profiled": profiled},
        "step_s": step_s,
        "step_s_range": [min(measured), max(measured)],
        "tokens_per_s": tokens * per_step / step_s,
        "images_per_s": images * per_step / step_s,
        "peak_memory_mib": clock.peak,  # up to the last step, the checkpoint save excluded
        "peak_memory_kind": memory_kind,
        "kernel_share": captured["busy_s"] / profiled_wall,
        "kernel_share_kind": "CUDA kernel time / wall" if device.type == "cuda" else "CPU op self time / wall",
        "losses": [result.losses[0], result.losses[-1]],
        "checkpoint_mib": (out_dir / WEIGHTS_FILE).stat().st_size / 2**20,
        "wall_s": wall_s,  # the whole train_stage call: what the stage costs the run's time budget
    }


class ForwardCounter:
    """Counts forward calls of the causal LM: one per decoded token, plus one reading of the reply's end."""

    def __init__(self, model: PegsModel):
        llm = model.llm
        base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # under LoRA after joint
        self.calls = 0
        self.handle = base.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.calls += 1


def _timed(fn: Callable[..., Any], device: torch.device, into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sync(device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        into.append(time.perf_counter() - start)
        return out

    return wrapper


def run_responder(
    mode: str, model: PegsModel, library: StickerLibrary, plan: Plan, workdir: Path, device: torch.device
) -> dict[str, Any]:
    """1 + ``plan.replies`` replies of ``pegs-<mode>`` to fresh contexts; the first is a warm-up."""
    generated = workdir / f"generated-{mode}" if mode != "ret" else None
    start = time.perf_counter()
    responder = PegsResponder(model, library, mode, generated_dir=generated)  # type: ignore[arg-type]
    setup_s = time.perf_counter() - start  # the library's sticker matrix, and for gen/rag an SD build
    image_times: list[float] = []
    if responder.painter is not None:  # time the painter's own call: the image part of a reply
        responder.painter.generate = _timed(responder.painter.generate, device, image_times)  # type: ignore[method-assign]
        responder.painter.restyle = _timed(responder.painter.restyle, device, image_times)  # type: ignore[method-assign]
    counter = ForwardCounter(model)
    latencies, tokens, sent = [], [], 0
    memory_kind = ""
    try:
        for i in range(1 + plan.replies):
            if i == 1:
                memory_kind = reset_peak(device)
                image_times.clear()
            s = library.stickers[(7 * i + 1) % len(library)]
            context = DialogueContext(user_message=USER[i % len(USER)], user_sticker=s)
            counter.calls = 0
            sync(device)
            start = time.perf_counter()
            reply = asyncio.run(responder.respond(context))
            sync(device)
            if i == 0:
                continue
            latencies.append(time.perf_counter() - start)
            tokens.append(counter.calls - 1)  # minus the one pass that reads the reply's end
            sent += reply.sticker is not None
    finally:
        counter.handle.remove()
    reply_s = statistics.median(latencies)
    image_s = statistics.median(image_times) if image_times else None
    text_s = reply_s - (image_s or 0.0)
    sd = model.config.sd
    row = {
        "responder": f"pegs-{mode}",
        "replies": len(latencies),
        "stickers_sent": sent,
        "reply_s": reply_s,
        "image_s": image_s,
        "decoded_tokens": statistics.mean(tokens),
        "tokens_per_s": statistics.mean(tokens) / text_s,
        "images_per_s": 1 / image_s if image_s else None,
        "peak_memory_mib": peak_mib(device),
        "peak_memory_kind": memory_kind,
        "setup_s": setup_s,
    }
    if mode != "ret" and sd is not None:
        row.update(image_size=sd.image_size, sd_steps=sd.steps, guidance=sd.guidance)
    del responder
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def always_send(config: PegsConfig) -> PegsConfig:
    """The config with a send threshold below any score: every reply carries a sticker, so every reply of
    PEGS-Gen and PEGS-RAG paints one (a random model would otherwise rarely send)."""
    fit = SendFit(threshold=-1e9, target="share", turns=1, gold_share=1.0, share=1.0, precision=1.0, recall=1.0, f1=1.0)
    return config.model_copy(update={"send": SendConfig(decision="threshold", fit=fit)})


# ----- output -----


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"PEGS `{report['config']}` on {report['device']} (torch {report['torch']}); model built in "
        f"{report['build_s']:.1f} s, {report['parameters']['total'] / 1e6:,.1f} M parameters "
        f"(LLM {report['parameters']['llm'] / 1e6:,.1f} M); {report['total_s']:.0f} s in all",
        "",
        "| stage | batch x accum | tokens / example | step (s, median) | tokens/s | images/s | peak memory (MiB) "
        "| kernel share | checkpoint (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["stages"]:
        lines.append(
            f"| {r['stage']} | {r['batch_size']} x {r['grad_accum']} | {r['tokens_per_example']:.0f} "
            f"| {_fmt(r['step_s'], 3)} | {_fmt(r['tokens_per_s'], 0)} | {_fmt(r['images_per_s'], 1)} "
            f"| {_fmt(r['peak_memory_mib'], 0)} | {r['kernel_share']:.0%} | {_fmt(r['checkpoint_mib'], 1)} |"
        )
    lines += [
        "",
        f"kernel share: {report['stages'][0]['kernel_share_kind']}; peak memory: "
        f"{report['stages'][0]['peak_memory_kind']}",
        "",
        "| responder | replies | reply (s, median) | image (s, median) | decoded tokens | tokens/s | images/s "
        "| peak memory (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["responders"]:
        lines.append(
            f"| {r['responder']} | {r['replies']} | {_fmt(r['reply_s'], 3)} | {_fmt(r['image_s'], 3)} "
            f"| {r['decoded_tokens']:.0f} | {_fmt(r['tokens_per_s'], 1)} | {_fmt(r['images_per_s'], 3)} "
            f"| {_fmt(r['peak_memory_mib'], 0)} |"
        )
    return "\n".join(lines)


def _parameters(model: PegsModel) -> dict[str, int]:
    parts = {"llm": model.llm, "vision": model.vision, "retrieval_vision": model.retrieval_vision}
    out = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items() if m is not None}
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


def build_model(config: PegsConfig, device: torch.device) -> PegsModel:
    """The model, its random weights drawn on ``device`` where it is a GPU: drawing 8 B values on the host took
    about 50 M a second here (minutes of the GPU run's 8), on a GPU it takes seconds. The values differ from a
    host build's (another generator), which a benchmark does not mind. Should any part refuse to be built
    under the device context, the build falls back to the host and says so."""
    if device.type != "cuda":
        return PegsModel(config)
    try:
        with torch.device(device):
            return PegsModel(config)
    except Exception:  # noqa: BLE001 - measured either way; the log keeps the reason
        log.exception("building on %s failed; building on the host instead", device)
        gc.collect()
        torch.cuda.empty_cache()
        return PegsModel(config)


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shrink", action="store_true", help="paper_shapes(shrink=True) with a CPU plan")
    parser.add_argument("--device", default=None, help="default: cuda when there is one (cpu with --shrink)")
    parser.add_argument("--stickers", type=Path, default=None, help="a sticker library (default: drawn ones)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep stage checkpoints here (default: temp)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.shrink else "cpu"))
    if device.type == "cpu":
        # one thread: on a shared small machine OpenMP threads spin against the other processes; the shrunk joint
        # step took 6.7 s with torch's default 2 threads at load 7 on 2 cores, 0.31 s with one
        torch.set_num_threads(args.threads)
    plan = shrink_plan() if args.shrink else full_plan()
    config = always_send(paper_shapes(shrink=args.shrink))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    log.info("device %s, load average %.2f, %d torch threads", name, os.getloadavg()[0], torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        library = (
            StickerLibrary.load(args.stickers) if args.stickers else draw_library(workdir / "stickers", plan.stickers)
        )
        start = time.perf_counter()
        model = build_model(config, device)
        build_s = time.perf_counter() - start
        parameters = _parameters(model)
        model.to(device)
        log.info("built in %.1f s: %s", build_s, parameters)
        assert config.sd is not None and config.mapper is not None  # paper_shapes has both
        stages, sd = [], None
        for stage in STAGES:
            if stage in ("generation", "joint") and sd is None:  # resident from here on, as in `pegs train`
                start = time.perf_counter()
                sd = load_sd(config.sd, config.mapper.out_dim, config.seed, device)
                log.info("SD built and moved in %.1f s", time.perf_counter() - start)
            stages.append(run_stage(stage, model, library, plan, workdir / stage, device, sd))
        del sd  # each painting responder loads its own
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        responders = [run_responder(mode, model.eval(), library, plan, workdir, device) for mode in MODES]
    report = {
        "config": "paper-shapes (shrunk)" if args.shrink else "paper-shapes",
        "device": name,
        "torch": torch.__version__,
        "host": platform.node(),
        "load_average": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "build_s": build_s,
        "parameters": parameters,
        "max_length": config.max_length,
        "stages": stages,
        "responders": responders,
        "total_s": time.perf_counter() - started,  # the whole run after imports: the GPU plan's budget is 8 minutes
    }
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
