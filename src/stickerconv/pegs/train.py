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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from stickerconv.data.samples import Sample
from stickerconv.pegs.config import PegsConfig, VisionConfig
from stickerconv.pegs.diffusion import SDComponents, encode_captions, load_sd
from stickerconv.pegs.model import PegsModel, PegsOutput
from stickerconv.pegs.sequence import Example, caption_example, image_block_example, sample_example
from stickerconv.pegs.vision import pretrain_cnn, save_cnn, sticker_text
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

Stage = Literal["perception", "retrieval", "generation", "joint"]
TRAINER_STATE = "trainer_state.pt"
VISION_LOSSES = "losses.json"  # written last by vision_stage: its presence marks the stage finished
VISION_FIELDS = ("vision", "retrieval_vision")  # the PegsConfig fields that may hold an offline CNN

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
    clip_grad: float | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 42
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(10, ge=1)


def paper_stage(stage: Stage, variant: Literal["gen", "rag"] = "gen") -> StageConfig:
    """The §5.4 table's settings (iterations as optimiser steps of one epoch × epochs)."""
    if stage == "perception":
        return StageConfig(stage=stage, lr=1e-4, warmup_steps=2000, max_steps=4 * 20_000, batch_size=32)
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
        )
    return StageConfig(stage=stage, lr=1e-4, betas=(0.9, 0.95), warmup_steps=1000, max_steps=4000, batch_size=6)


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


def _total(stage: Stage, out: PegsOutput) -> torch.Tensor:
    parts = {"lm": out.lm_loss, "gen": out.gen_loss, "ret": out.ret_loss}
    terms = [parts[name] for name in STAGE_LOSSES[stage] if parts[name] is not None]
    if not terms:
        raise ValueError(f"stage {stage!r}: the batch gave none of its losses {STAGE_LOSSES[stage]}")
    return torch.stack(terms).sum()


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
    config when the stage needs it and none is passed."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_cosine_schedule_with_warmup

    out_dir = Path(out_dir)
    stage = cfg.stage
    if len(examples) < cfg.batch_size:  # the loader drops incomplete batches, so no step would ever be taken
        raise ValueError(f"the {stage} stage has {len(examples)} example(s), fewer than one batch of {cfg.batch_size}")
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(cfg.seed)
    if stage == "joint" and not model.lora_attached:
        model.attach_lora()
    params = model.freeze_except(STAGE_PARTS[stage])
    if stage in ("generation", "joint") and model.gen_mapper is not None and sd is None and model.config.sd:
        sd = load_sd(model.config.sd, model.config.mapper.out_dim, model.config.seed, accelerator.device)  # type: ignore[union-attr]
    if stage == "generation" and sd is None:
        raise ValueError("the generation stage needs a diffusers text encoder: set sd in the PEGS config")
    optimizer = _optimizer(model, params, cfg)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps)
    step, losses = 0, []
    state_path = out_dir / TRAINER_STATE
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_weights(out_dir)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, losses = state["step"], state["losses"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        log.info("%s: resumed from %s at step %d", stage, out_dir, step)
    collate = model.collator(train=True, seed=cfg.seed + step)
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    per_epoch = max(1, len(examples) // (cfg.batch_size * accelerator.num_processes * cfg.grad_accum))
    model.train()
    while step < cfg.max_steps:
        epoch, done_in_epoch = divmod(step, per_epoch)
        loader = DataLoader(
            list(examples),
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
        )
        loader = accelerator.skip_first_batches(accelerator.prepare(loader), done_in_epoch * cfg.grad_accum)
        running = 0.0
        for batch in loader:
            with accelerator.accumulate(prepared):
                targets = encode_captions(sd, batch.captions) if sd is not None and batch.captions else None
                out = prepared(batch, gen_targets=targets)
                loss = _total(stage, out)
                accelerator.backward(loss)
                running += loss.item() / cfg.grad_accum
                if accelerator.sync_gradients and cfg.clip_grad:
                    accelerator.clip_grad_norm_(params, cfg.clip_grad)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            losses.append(running)
            running = 0.0
            if step % cfg.log_every == 0 or step == 1:
                parts = {k: round(v.item(), 4) for k, v in vars(out).items() if v is not None}
                log.info(
                    "%s step %d/%d loss %.4f %s lr %.2e",
                    stage,
                    step,
                    cfg.max_steps,
                    losses[-1],
                    parts,
                    scheduler.get_last_lr()[0],
                )
            if on_progress:
                on_progress(step, cfg.max_steps)
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                _checkpoint(accelerator, model, optimizer, scheduler, step, losses, out_dir)
            if step >= cfg.max_steps:
                break
    model.eval()
    return TrainResult(step, losses, out_dir)


def _checkpoint(
    accelerator: Any,
    model: PegsModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    losses: list[float],
    out_dir: Path,
) -> None:
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model.save_pretrained(out_dir)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "losses": losses,
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, out_dir / TRAINER_STATE)
    log.info("checkpoint at step %d in %s", step, out_dir)
