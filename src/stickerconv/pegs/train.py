"""PEGS training: one readable loop for every stage (method reference §5.4), through accelerate.

Why one loop: the stages differ only in their data, the parts they unfreeze, the losses they add
and their optimiser settings (:data:`STAGE_PARTS`, :data:`STAGE_LOSSES`, :func:`paper_stage`), so
one ``train_stage`` runs them all, and accelerate launches the same code on one CPU or many GPUs
(DDP/FSDP/DeepSpeed via ``accelerate launch``). What the original runner ignored is implemented:
gradient clipping, accumulation, mixed precision (§9 item 33). Stages chain by explicit paths:
each writes a checkpoint folder that the next loads with ``PegsModel.from_pretrained``.

Resuming: every ``checkpoint_every`` steps (and at the end) the stage folder holds the model
checkpoint and ``trainer_state.pt`` (optimiser, scheduler, step, losses, RNG); rerunning the same
stage on the same folder continues from there, skipping the batches already seen in that epoch.

One process keeps one Accelerator for all its stages (accelerate holds one state per process and refuses a
second Accelerator with another mixed precision); only rank 0 writes checkpoints and logs. Batches are
collated in DataLoader workers, each example's random crops seeded by its own key, so the batches are the same
whatever the number of workers or processes, and per-step losses stay on the device until a log or checkpoint
point reads them.

Before those stages, :func:`vision_stage` pretrains any offline CNN of the config that has no
weights (the ``small`` preset's), because a random frozen CNN gives the LLM and the retrieval head
nothing to read. It writes the weights file once and returns the config pointing at it by absolute
path, so every later checkpoint names the file instead of copying the frozen encoder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from stickerconv.data.samples import Sample
from stickerconv.pegs.config import VISION_FIELDS, PegsConfig, VisionConfig
from stickerconv.pegs.diffusion import SDComponents, encode_captions, load_sd
from stickerconv.pegs.heads import RetrievalBank
from stickerconv.pegs.model import PegsModel, PegsOutput
from stickerconv.pegs.sequence import (
    Batch,
    Collator,
    Example,
    caption_example,
    image_block_example,
    sample_example,
)
from stickerconv.pegs.vision import pretrain_cnn, save_cnn, sticker_text
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

Stage = Literal["perception", "retrieval", "generation", "joint"]
TRAINER_STATE = "trainer_state.pt"
VISION_LOSSES = "losses.json"  # written last by vision_stage: its presence marks the stage finished

# what each stage unfreezes (§5.4); "tokens" is the masked <Img>, </Img>, [IMG1..N] rows
STAGE_PARTS: dict[str, tuple[str, ...]] = {
    "perception": ("proj", "tokens"),
    "retrieval": ("ret", "tokens"),
    "generation": ("gen", "tokens"),
    "joint": ("lora", "proj", "tokens", "ret", "gen"),
}
# which losses each stage adds (§5.3); the others are still computed and logged when available.
# Retrieval alignment adds L_lm on the [IMG] tokens: its LLM states are detached, so without it the
# trainable [IMG] rows would get no gradient at all.
STAGE_LOSSES: dict[str, tuple[str, ...]] = {
    "perception": ("lm",),
    "retrieval": ("lm", "ret"),
    "generation": ("gen",),
    "joint": ("lm", "gen", "ret"),
}


class StageConfig(BaseModel):
    """Optimiser and loop settings of one stage; defaults are the paper's common settings."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    lr: float = 1e-4
    head_lr: float | None = None  # retrieval heads and generation mapper; None: lr. Raise it for short CPU runs
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.05
    warmup_steps: int = Field(2000, ge=0)
    max_steps: int = Field(1000, ge=1)  # optimiser steps
    batch_size: int = Field(6, ge=1)  # per device
    grad_accum: int = Field(1, ge=1)
    max_length: int | None = Field(None, ge=16)  # tokens per sequence; None: the model's max_length
    clip_grad: float | None = 1.0
    # auto: the launcher's --mixed_precision when it names fp16 or bf16, else bf16 on a CUDA device that has it, else no
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False  # recompute the LLM's layer activations in the backward: memory for time
    num_workers: int | None = Field(None, ge=0)  # DataLoader workers collating batches; None: see loader_workers
    prefetch_factor: int = Field(2, ge=1)  # batches each worker prepares ahead (with workers only)
    seed: int = 42
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(10, ge=1)


# the §5.4 table's epochs: what a stage runs over its own data under the paper profile (its iteration counts are
# epochs of the paper's data: LAION's for the alignment stages, StickerConv's for joint training)
PAPER_EPOCHS: dict[tuple[str, str], int] = {
    ("perception", "gen"): 4,
    ("retrieval", "gen"): 4,
    ("generation", "gen"): 4,
    ("joint", "gen"): 4,
    ("joint", "rag"): 10,
}


def paper_epochs(stage: Stage, variant: Literal["gen", "rag"] = "gen") -> int:
    return PAPER_EPOCHS[(stage, variant if stage == "joint" else "gen")]


def paper_stage(stage: Stage, variant: Literal["gen", "rag"] = "gen", sticker_data: bool = False) -> StageConfig:
    """The §5.4 table's settings (iterations as optimiser steps of one epoch × epochs).

    ``variant``: the joint stage of PEGS-Gen (row 4) or of the retrieval-capable model (row 4′, batch 3 × 36
    accumulated). ``sticker_data``: the alignment stages train on sticker captions, as `pegs train`'s do, so the
    generation stage takes its sticker row (3, SFT: lr 5e-5, warm-up 200, batch 28, 4 epochs of the captions,
    whose count the caller knows) instead of its LAION row (2); perception has only its LAION row, and the
    retrieval rows 2′ and 3′ agree. The table's max length is kept for the joint rows (1024; 768 for 4′); the
    alignment rows' 64 and 77 counted the caption's text tokens, while our caption sequences also hold the [IMG]
    block (32 or 64 tokens), which a cut at 77 would drop, so they keep the model's length."""
    if stage == "perception":
        return StageConfig(stage=stage, lr=1e-4, warmup_steps=2000, max_steps=4 * 20_000, batch_size=32)
    if stage == "generation" and sticker_data:
        return StageConfig(stage=stage, lr=5e-5, warmup_steps=200, batch_size=28)
    if stage == "generation":
        return StageConfig(stage=stage, lr=1e-4, warmup_steps=2000, max_steps=4 * 20_000, batch_size=32)
    if stage == "retrieval":
        return StageConfig(
            stage=stage, lr=3e-5, betas=(0.9, 0.95), warmup_steps=2000, max_steps=4 * 35_555, batch_size=36
        )
    if variant == "rag":
        return StageConfig(
            stage=stage,
            lr=3e-6,
            weight_decay=1e-4,
            warmup_steps=2000,
            max_steps=10 * 17_084,
            batch_size=3,
            grad_accum=36,
            max_length=768,
        )
    return StageConfig(
        stage=stage, lr=1e-4, betas=(0.9, 0.95), warmup_steps=1000, max_steps=4000, batch_size=6, max_length=1024
    )


@dataclass
class TrainResult:
    steps: int  # optimiser steps done in total (including resumed ones)
    losses: list[float]  # total loss per optimiser step
    out_dir: Path


def sticker_examples(library: StickerLibrary, stage: Stage, caption_template: str = "{description}") -> list[Example]:
    """Sticker (image, caption) pairs: perception -> ``<Img>…</Img> caption``; the alignment stages ->
    ``caption [IMG1..N]`` with the sticker as retrieval positive and the caption as SD prompt."""
    out = []
    for s in library:
        caption = caption_template.format(**s.to_published())
        path = library.image_path(s)
        out.append(caption_example(path, caption) if stage == "perception" else image_block_example(path, caption))
    return out


def dialogue_examples(samples: Sequence[Sample], image_root: Path, model: PegsModel) -> list[Example]:
    """Per-turn samples (§4.4) as joint-training examples, rendered in the model's style."""
    cfg = model.config
    template = cfg.sd.caption_template if cfg.sd is not None else "{description}"
    return [sample_example(s, image_root, cfg.style, cfg.system_prompt, template) for s in samples]


def untrained_cnns(config: PegsConfig) -> list[str]:
    """The config fields (of :data:`VISION_FIELDS`) holding an offline CNN without weights: what
    :func:`vision_stage` pretrains. Empty when there is nothing to pretrain."""
    out = []
    for name in VISION_FIELDS:
        vision: VisionConfig | None = getattr(config, name)
        if vision is not None and vision.kind == "cnn" and vision.name_or_path is None:
            out.append(name)
    return out


@dataclass
class VisionStageResult:
    config: PegsConfig  # the input config with every untrained CNN pointing at its weights file
    losses: dict[str, list[float]]  # weights file name -> pretraining loss per step
    seconds: float  # pretraining time when it ran (the recorded one when reused)
    reused: bool  # a finished stage was found in the folder


def vision_stage(
    config: PegsConfig,
    library: StickerLibrary,
    out_dir: Path | str,
    embed_texts: Callable[[Sequence[str]], np.ndarray],
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 42,
    threads: int | None = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> VisionStageResult:
    """Pretrain each untrained CNN of ``config`` on the library's images and ``"label: description"``
    texts (:func:`~stickerconv.pegs.vision.pretrain_cnn`) into ``out_dir`` and return the config that
    loads it. A finished stage in ``out_dir`` (its ``losses.json``) is reused, not trained again.

    The perception and retrieval CNNs share one file when their configs are equal (the same
    objective would train the same weights); the file is ``cnn.pt``, or ``retrieval-cnn.pt`` for a
    differing retrieval CNN. Paths are stored absolute, so checkpoints load from any working directory.

    ``threads``: torch intra-op threads while pretraining (None: leave torch's setting). One by
    default because the small CNN gains little from more, while OpenMP threads that spin against
    other processes cost a lot: 300 steps of the ``small`` CNN on the 257-sticker pack took 29 s with
    one thread and 194 s with two on a loaded 2-core machine (same losses).
    """
    fields = untrained_cnns(config)
    if not fields:
        raise ValueError("the config has no CNN without weights: there is nothing for the vision stage to pretrain")
    out_dir = Path(out_dir).resolve()
    files: dict[str, str] = {}  # field -> file name
    for name in fields:
        twin = next((f for f in files if getattr(config, f) == getattr(config, name)), None)
        files[name] = files[twin] if twin else ("cnn.pt" if name == "vision" else "retrieval-cnn.pt")
    wanted = {files[name]: getattr(config, name).model_dump(mode="json") for name in fields}
    record_path = out_dir / VISION_LOSSES
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        trained = {file: entry["vision"] for file, entry in record["encoders"].items()}
        if trained != wanted or not all((out_dir / file).is_file() for file in wanted):
            raise ValueError(
                f"{out_dir} holds a vision stage for other CNN settings or is missing weights "
                f"(has {sorted(trained)}, needs {sorted(wanted)}); delete the folder to pretrain again"
            )
        log.info("vision: reusing the finished stage in %s", out_dir)
        losses = {file: entry["losses"] for file, entry in record["encoders"].items()}
        return VisionStageResult(_pointing(config, files, out_dir), losses, record["seconds"], True)
    if len(library) < 2:
        raise ValueError(f"the vision stage needs at least 2 stickers to contrast, the library has {len(library)}")
    images = [library.image_path(s) for s in library]
    texts = [sticker_text(s.label, s.description) for s in library]
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    encoders: dict[str, dict[str, Any]] = {}
    before = torch.get_num_threads()
    for file, vision in wanted.items():
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            enc, losses = pretrain_cnn(
                images,
                texts,
                embed_texts,
                VisionConfig.model_validate(vision),
                steps=steps,
                batch_size=min(batch_size, len(images)),
                lr=lr,
                seed=seed,
                on_progress=on_progress,
            )
        finally:
            torch.set_num_threads(before)
        partial = out_dir / (file + ".partial")
        save_cnn(enc, partial)
        os.replace(partial, out_dir / file)  # never a half-written weights file under the real name
        encoders[file] = {"vision": vision, "steps": steps, "losses": losses}
        log.info("vision: %s pretrained, loss %.4f -> %.4f", file, losses[0], losses[-1])
    seconds = round(time.perf_counter() - start, 1)
    record = {"encoders": encoders, "stickers": len(images), "library": str(library.root), "seconds": seconds}
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    losses = {file: entry["losses"] for file, entry in encoders.items()}
    return VisionStageResult(_pointing(config, files, out_dir), losses, seconds, False)


def _pointing(config: PegsConfig, files: dict[str, str], out_dir: Path) -> PegsConfig:
    """``config`` with each pretrained CNN field's ``name_or_path`` set to its absolute weights path."""
    updates = {
        name: getattr(config, name).model_copy(update={"name_or_path": str(out_dir / file)})
        for name, file in files.items()
    }
    return config.model_copy(update=updates)


def _optimizer(model: PegsModel, params: list[torch.nn.Parameter], cfg: StageConfig) -> torch.optim.Optimizer:
    """AdamW; the token matrices get no weight decay, or decoupled decay would shrink their frozen rows.

    The heads may learn at their own rate (``head_lr``): they start from random, while the LLM-side
    parts (tokens, projection, LoRA) must move little; a few hundred CPU steps at the paper's 3e-5 to
    1e-4 leave the heads nearly where they started."""
    token_ids = {id(w) for w in model.token_matrices()}
    heads = [m for m in (model.ret_heads, model.gen_mapper) if m is not None]
    head_ids = {id(p) for m in heads for p in m.parameters()}
    rest = [p for p in params if id(p) not in token_ids and id(p) not in head_ids]
    groups = [
        {"params": rest, "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in head_ids], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in token_ids], "weight_decay": 0.0},
    ]
    if cfg.head_lr is not None:
        groups[1]["lr"] = cfg.head_lr
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def _total(stage: Stage, out: PegsOutput, ret_weight: float = 1.0) -> torch.Tensor:
    """The stage's loss of one micro-batch. ``ret_weight``: the accumulation steps when L_ret is the window's
    pooled loss (:class:`~stickerconv.pegs.heads.RetrievalBank`), present at the window's last micro-batch
    only: accelerate divides every micro-batch's loss by the accumulation steps, so the pooled L_ret counts
    once per optimiser step, as the large batch's would."""
    parts = {"lm": out.lm_loss, "gen": out.gen_loss, "ret": out.ret_loss}
    weights = {"ret": ret_weight}
    terms = [parts[name].float() * weights.get(name, 1.0) for name in STAGE_LOSSES[stage] if parts[name] is not None]
    if not terms:
        raise ValueError(f"stage {stage!r}: the batch gave none of its losses {STAGE_LOSSES[stage]}")
    return torch.stack(terms).sum()


# Ranks > 0 wait at a barrier while rank 0 runs the single-process stages of `pegs train` (vision, distill, send):
# torch's default collective timeout (30 min) would end a run whose distill stage reads many turns.
BARRIER_TIMEOUT = timedelta(hours=2)


def process_state() -> Any:
    """accelerate's ``PartialState``: this process's rank, device and barriers (one process: rank 0, and the
    barriers return at once). Created on first use, as an Accelerator would create it: ``ACCELERATE_USE_CPU``
    (set by ``accelerate launch --cpu``, and by the tests' gloo run) keeps a launched run on CPU, and the process
    group gets :data:`BARRIER_TIMEOUT`."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=BARRIER_TIMEOUT)


def resolve_precision(setting: str, device: torch.device) -> str:
    """``StageConfig.mixed_precision`` for ``device``. ``auto`` takes the launcher's ``--mixed_precision`` when
    it names fp16 or bf16 (``accelerate launch`` exports it), else bf16 on a CUDA device that supports it: a
    7B backbone and its activations fit one GPU only in half precision, and bf16 needs no loss scaling. On a
    CPU ``auto`` is ``no``, the precision the CPU presets were measured in."""
    if setting != "auto":
        return setting
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launched in ("fp16", "bf16"):
        return launched
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def loader_workers(setting: int | None, device: torch.device) -> int:
    """DataLoader workers for ``StageConfig.num_workers``: the setting, or by default none on a CPU (the workers
    would take cores from the training's own threads, and decoding costs little beside a CPU forward) and on
    CUDA up to 4 per process, from this process's share of the cores, so image decoding and crops overlap the
    GPU's step."""
    if setting is not None:
        return setting
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


_accelerator: Any = None  # this process's Accelerator, reused by every stage (see _stage_accelerator)
_RESETTABLE = ("NO", "MULTI_CPU", "MULTI_GPU")  # distributed types whose precision lives in the Accelerator alone


def _stage_accelerator(precision: str, grad_accum: int) -> Any:
    """The process's Accelerator, set for a stage. accelerate keeps one state per process, and a second
    Accelerator with another mixed precision raises "AcceleratorState has already been initialized", so one is
    kept and reused while the precision matches. When a stage asks for another one, accelerate's own reset
    (``AcceleratorState._reset_state()``, the one its test suite uses) clears the precision state and a new
    Accelerator is built; ``PartialState`` is kept, so a launched run keeps its process group and device. Under
    DeepSpeed, FSDP and the other sharded set-ups the precision is part of the launcher's config and the engine,
    so a change between stages is refused there."""
    global _accelerator
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    if _accelerator is not None and _accelerator.mixed_precision != precision:
        kind = _accelerator.distributed_type.name
        if kind not in _RESETTABLE:
            raise ValueError(
                f"mixed precision {_accelerator.mixed_precision!r} cannot change to {precision!r} between stages "
                f"under {kind}: give every stage the launcher's precision"
            )
        log.info("mixed precision %s -> %s: resetting accelerate's state", _accelerator.mixed_precision, precision)
        AcceleratorState._reset_state()
        _accelerator = None
    if _accelerator is None:
        cuda = process_state().device.type == "cuda"
        _accelerator = Accelerator(
            mixed_precision=precision,
            # pinned batches (pin_memory on CUDA) copy asynchronously, overlapping the previous step's compute
            dataloader_config=DataLoaderConfiguration(non_blocking=cuda),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    _accelerator.gradient_accumulation_steps = grad_accum
    # accelerate counts micro-batches across loaders; a stage that ended mid-epoch (or was interrupted) left the
    # count where it stopped, which would misalign this stage's first accumulation window
    _accelerator.step = 0
    return _accelerator


class _KeyedExamples(torch.utils.data.Dataset):
    """The stage's examples addressed by key ``epoch * n + i``: the key names the example and its epoch, and
    :class:`_Collate` seeds the example's crops with it, so a crop is fixed by the key alone."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: int) -> tuple[int, Example]:
        return key, self.examples[key % len(self.examples)]


class _EpochSampler(torch.utils.data.Sampler[int]):
    """Keys of one epoch: the examples shuffled by ``seed + epoch``, cut to ``usable`` (whole optimiser steps of
    the global batch, so every step accumulates the same number of micro-batches and an epoch ends on a step).
    Every process draws the same order; accelerate hands each its share. The loop sets ``epoch`` before each
    pass (not through accelerate's ``set_epoch``, which does not reach a sampler under its resume loader)."""

    def __init__(self, n: int, usable: int, seed: int):
        self.n, self.usable, self.seed, self.epoch = n, usable, seed, 0

    def __len__(self) -> int:
        return self.usable

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return iter((order[: self.usable] + self.epoch * self.n).tolist())


class _Collate:
    """The DataLoader's collate function: a module-level class, so that workers started by spawn or forkserver
    can unpickle it (a closure could not be). Each example's crops are seeded by ``(seed, key)``."""

    def __init__(self, collator: Collator, seed: int):
        self.collator, self.seed = collator, seed

    def __call__(self, items: Sequence[tuple[int, Example]]) -> Batch:
        return self.collator([ex for _, ex in items], seeds=[self.seed * 2**32 + key for key, _ in items])


def _backbone(model: PegsModel) -> Any:
    """The transformers causal LM, under peft's wrapper when LoRA is attached: its checkpointing switches live there."""
    return model.llm.get_base_model() if model.lora_attached else model.llm


def _set_checkpointing(model: PegsModel, on: bool) -> None:
    """Activation checkpointing of the LLM's decoder layers, non-reentrant: it needs no input that requires grad
    (so no ``enable_input_require_grads`` for LoRA on a frozen base), works with DDP's unused-parameter search,
    and keeps dropout's RNG so the recomputed forward equals the first. transformers 5 names the switch
    ``activation_checkpointing_*`` and keeps ``gradient_checkpointing_*`` as a deprecated alias."""
    llm = _backbone(model)
    if on:
        enable = getattr(llm, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(llm, "activation_checkpointing_disable", None) or llm.gradient_checkpointing_disable
        disable()


def train_stage(
    model: PegsModel,
    examples: Sequence[Example],
    cfg: StageConfig,
    out_dir: Path | str,
    sd: SDComponents | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for one stage and save it to ``out_dir`` (resuming from it if a
    ``trainer_state.pt`` is there). ``sd`` gives the L_gen targets; it is loaded from the model's
    config when the stage needs it and none is passed.

    Under ``accelerate launch`` every process calls this with the same arguments: ``batch_size`` is per
    process, so an optimiser step sees ``batch_size × processes × grad_accum`` examples; rank 0 alone logs and
    writes, and no rank returns before the last checkpoint is on disk (the next stage loads it). The recorded
    losses are means over the processes: the global batch's loss when the ranks' batches hold equal numbers of
    supervised tokens (DDP averages the ranks' gradients, each the mean over its own tokens)."""
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    out_dir = Path(out_dir)
    stage = cfg.stage
    accelerator = _stage_accelerator(resolve_precision(cfg.mixed_precision, process_state().device), cfg.grad_accum)
    device = accelerator.device
    global_batch = cfg.batch_size * accelerator.num_processes
    per_epoch = steps_per_epoch(len(examples), cfg, accelerator.num_processes)
    set_seed(cfg.seed)
    if stage == "joint" and not model.lora_attached:
        model.attach_lora()
    params = model.freeze_except(STAGE_PARTS[stage])
    if stage in ("generation", "joint") and model.gen_mapper is not None and sd is None and model.config.sd:
        sd = load_sd(model.config.sd, model.config.mapper.out_dim, model.config.seed, device)  # type: ignore[union-attr]
    if stage == "generation" and sd is None:
        raise ValueError("the generation stage needs a diffusers text encoder: set sd in the PEGS config")
    optimizer = _optimizer(model, params, cfg)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps)
    step, losses = _resume(model, optimizer, scheduler, out_dir, cfg.max_steps)
    if step and accelerator.is_main_process:
        log.info("%s: resumed from %s at step %d", stage, out_dir, step)
    sampler = _EpochSampler(len(examples), per_epoch * cfg.grad_accum * global_batch, cfg.seed)
    loader = _loader(model, examples, sampler, cfg, device)
    if cfg.gradient_checkpointing:
        _set_checkpointing(model, True)
    prepared = None
    try:
        # the scheduler stays unprepared: accelerate would step it once per process at every optimiser step, while
        # max_steps and warmup_steps count optimiser steps of the global batch
        prepared, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        model.train()
        pending: list[torch.Tensor] = []  # per-step losses still on the device, read at log and checkpoint points
        running = torch.zeros((), device=device)
        bank = RetrievalBank()  # L_ret over each accumulation window's pairs
        while step < cfg.max_steps:
            epoch, done_in_epoch = divmod(step, per_epoch)
            sampler.epoch = epoch  # the shuffle and the examples' keys
            batches = loader
            if done_in_epoch:  # resumed mid-epoch: a loader for this epoch that skips the micro-batches seen
                batches = accelerator.skip_first_batches(loader, done_in_epoch * cfg.grad_accum)
            for batch in batches:
                with accelerator.accumulate(prepared):
                    out, loss = _micro_step(accelerator, prepared, batch, sd, bank, cfg)
                    running = running + loss / cfg.grad_accum
                    if accelerator.sync_gradients and cfg.clip_grad:
                        accelerator.clip_grad_norm_(params, cfg.clip_grad)
                    optimizer.step()  # a no-op while accumulating
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                if not optimizer.step_was_skipped:  # fp16 loss scaling skips a step whose gradients overflowed
                    scheduler.step()
                step += 1
                pending.append(running)
                running = torch.zeros((), device=device)
                if step % cfg.log_every == 0 or step == 1:
                    _read_losses(accelerator, pending, losses)
                    if accelerator.is_main_process:  # the parts are rank 0's last micro-batch
                        parts = {k: round(v.item(), 4) for k, v in vars(out).items() if v is not None}
                        lr = scheduler.get_last_lr()[0]
                        log.info(
                            "%s step %d/%d loss %.4f %s lr %.2e", stage, step, cfg.max_steps, losses[-1], parts, lr
                        )
                if on_progress:
                    on_progress(step, cfg.max_steps)
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                    _read_losses(accelerator, pending, losses)
                    moments = step < cfg.max_steps  # a finished stage keeps no AdamW moments (below)
                    _checkpoint(accelerator, model, optimizer if moments else None, scheduler, step, losses, out_dir)
                if step >= cfg.max_steps:
                    break
    finally:
        _release(accelerator, prepared, model, cfg.gradient_checkpointing)
    return TrainResult(step, losses, out_dir)


def steps_per_epoch(examples: int, cfg: StageConfig, processes: int = 1) -> int:
    """Whole optimiser steps in one pass over ``examples`` (the remainder is dropped); refused when there is not
    one, since no step would ever be taken."""
    window = cfg.batch_size * processes * cfg.grad_accum
    if examples < window:
        raise ValueError(
            f"the {cfg.stage} stage has {examples} example(s), fewer than one batch of {window} ({cfg.batch_size} × "
            f"{processes} process(es) × {cfg.grad_accum} accumulated)"
        )
    return examples // window


def _micro_step(
    accelerator: Any, prepared: Any, batch: Batch, sd: SDComponents | None, bank: RetrievalBank, cfg: StageConfig
) -> tuple[PegsOutput, torch.Tensor]:
    """Forward and backward of one micro-batch inside ``accelerator.accumulate``: its outputs and its loss,
    detached. The retrieval pairs join ``bank``, which closes on the window's last micro-batch, where L_ret is
    the pooled loss of the whole window."""
    targets = encode_captions(sd, batch.captions) if sd is not None and batch.captions else None
    bank.closing = accelerator.sync_gradients
    out = prepared(batch, gen_targets=targets, ret_bank=bank)
    loss = _total(cfg.stage, out, ret_weight=cfg.grad_accum)
    accelerator.backward(loss)
    return out, loss.detach()


def _resume(
    model: PegsModel, optimizer: torch.optim.Optimizer, scheduler: Any, out_dir: Path, max_steps: int
) -> tuple[int, list[float]]:
    """(step, losses) of the stage's last checkpoint in ``out_dir``, with the model's weights, the optimiser,
    the scheduler and the RNGs put back where they were; (0, []) when the stage starts afresh."""
    state_path = out_dir / TRAINER_STATE
    if not state_path.is_file():
        return 0, []
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    model.load_weights(out_dir)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    elif state["step"] < max_steps:
        log.warning(
            "%s: extending the stage finished at step %d to %d; its last checkpoint keeps no AdamW moments, so "
            "they start afresh",
            out_dir,
            state["step"],
            max_steps,
        )
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], state["losses"]


def _loader(
    model: PegsModel, examples: Sequence[Example], sampler: _EpochSampler, cfg: StageConfig, device: torch.device
) -> torch.utils.data.DataLoader:
    """The stage's DataLoader: batches collated in workers (:func:`loader_workers`), pinned on CUDA."""
    from torch.utils.data import DataLoader

    workers = loader_workers(cfg.num_workers, device)
    return DataLoader(
        _KeyedExamples(examples),
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=_Collate(model.collator(train=True, max_length=cfg.max_length), cfg.seed),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=cfg.prefetch_factor if workers else None,
        persistent_workers=workers > 0,  # one loader serves every epoch of the stage
        generator=torch.Generator().manual_seed(cfg.seed),  # seeds the workers without drawing on the global RNG
    )


def _read_losses(accelerator: Any, pending: list[torch.Tensor], losses: list[float]) -> None:
    """Move the pending per-step losses to ``losses``: one device read (and, launched, one all-reduce: every
    rank reaches the same log and checkpoint points) for all the steps since the last read."""
    if pending:
        losses += accelerator.reduce(torch.stack(pending), reduction="mean").tolist()
        pending.clear()


def _release(accelerator: Any, prepared: Any, model: PegsModel, checkpointing: bool) -> None:
    """Leave ``model`` as the stage found it, for the next stage or for inference: the mixed-precision wrapper
    accelerate put on its ``forward`` removed and its "prepared" mark dropped (else a later stage would neither
    wrap it in DDP nor apply its own precision), checkpointing off if the stage turned it on, eval mode; and
    the Accelerator's references to the stage's model, optimiser and loader released."""
    if prepared is not None:
        accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    vars(model).pop("_is_accelerate_prepared", None)
    if checkpointing:
        _set_checkpointing(model, False)
    model.eval()
    accelerator.free_memory()


def _checkpoint(
    accelerator: Any,
    model: PegsModel,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    step: int,
    losses: list[float],
    out_dir: Path,
) -> None:
    """Rank 0 writes the model and ``trainer_state.pt``; every rank waits until they are on disk, so that no
    rank reads a half-written checkpoint (the next stage starts by loading it).

    ``optimizer`` None (a stage's last checkpoint) leaves the AdamW moments out: they are dense over the whole
    token matrices (226 MB at ``small``'s 49k × 576, every stage) and a finished stage is only reused, or rarely
    extended with ``max_steps`` raised, when the moments start afresh."""
    if accelerator.is_main_process:
        model.save_pretrained(out_dir)
        state = {
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict(),
            "step": step,
            "losses": losses,
            "python_rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        torch.save(state, out_dir / TRAINER_STATE)
        log.info("checkpoint at step %d in %s", step, out_dir)
    accelerator.wait_for_everyone()
