"""Retrieval distillation: fit PEGS's retrieval heads so that its [IMG1] state ranks the library the way
the library's text index ranks it for the same dialogue context (a PEGS extension, not in the paper).

Why: the paper learns the context -> sticker map from hundreds of thousands of in-batch pairs. A
``small`` model trained on a few hundred simulated turns cannot learn it from the gold stickers alone:
measured at chance (bench/README.md). But every training turn, with or without a gold sticker, has a
context, and the text index (MiniLM over the annotations, the retriever the simulator's sticker tool
searches) turns each context into a soft target over every sticker. The heads learn that distribution
(KL divergence), plus the turn's gold sticker where it has one (cross-entropy, weighted). The student
ranks stickers by their *images*, so at inference it needs neither the annotations nor the text encoder.

Why cached features: the retrieval loss reads detached LLM states and the sticker encoder is frozen,
so the states (one forward pass per turn, read where ``retrieval_read`` says, exactly as
:meth:`PegsModel.generate` reads them) and the pooled sticker features are computed once; the two
linear heads are then fitted to convergence in seconds. The text head is fitted on standardised
states and the standardisation folded into its weights, so the saved heads are plain linear maps.
The same pass could give each turn's send score at the end of its gold reply, but a threshold fitted on
those misjudges the model's own replies (measured: pegs/send.py), so the send threshold has a pass of its own.

Why library readings (:func:`library_readings`): the teacher needs only a text, so the library's own annotations
give contexts no dialogue has to supply. Each of a seeded sample of stickers lends its emotion and recommendation
sentences as lone user messages. A demo-sized run has a dozen simulated turns whose words say little about
feelings: on the session-4 demo's checkpoint, heads fitted on them alone gave 30 fresh emotional chats stickers
agreeing in polarity with 13-15 of them, nearly all one Happiness or one Disgust sticker; with 100 stickers'
sentences read as well, 26, 19 and 26 of 30 for three fitting seeds (64 stickers: 23, 14, 22; 150: 23, 17, 26).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stickerconv.data.samples import IMG, Sample, Style, opening, render_samples
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.send import gold_reply
from stickerconv.pegs.sequence import sample_example
from stickerconv.schema import Conversation, Turn
from stickerconv.stickers.index import StickerIndex

log = logging.getLogger(__name__)

DISTILL_RECORD = "distill.json"  # written last into the stage folder: its presence marks the stage finished
LIBRARY_STICKERS = 100  # stickers whose annotation sentences are also read (two lone messages each, ~0.2 s apiece)


@dataclass
class DistillResult:
    turns: int  # training turns read (each one a distillation target)
    openings: int  # of them, turns also read as a new chat's first message (those with a dialogue before them)
    gold: int  # readings (turns and openings) whose gold sticker is an indexed library sticker (cross-entropy)
    library: int = 0  # lone messages made of library annotations (:func:`library_readings`), teacher targets only
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> gold stickers not used
    losses: list[float] = field(default_factory=list)  # total loss per step
    overlap_before: float = 0.0  # mean top-10 overlap of student and teacher rankings before fitting
    overlap_after: float = 0.0  # ... and after (training turns)
    seconds: float = 0.0


def teacher_text(sample: Sample) -> str:
    """The context the index scores: the history text without ``<IMG>``, as the evaluation's index
    retriever reads it (``evaluate.tokens.clean``)."""
    return sample.input_text.replace(IMG, "").strip()


def library_readings(index: StickerIndex, stickers: int, style: Style, seed: int = 0) -> list[Sample]:
    """Lone user messages from the annotations of ``stickers`` indexed stickers (a seeded sample): each one's
    emotion and recommendation sentence, without a reply or a gold sticker, so only the teacher's ranking
    guides them. Descriptions are left out: they name the drawing ("the grinning face emoji drawn in the Noto
    style"), not a feeling a person would write about, and heads fitted with them leaned on one sticker."""
    chosen = sorted(random.Random(seed).sample(range(len(index.stickers)), min(stickers, len(index.stickers))))
    texts = [t for i in chosen for t in (index.stickers[i].emotion, index.stickers[i].recommendation) if t.strip()]
    turns = [
        Conversation(conversation=[Turn(turn=1, user_message=t, system_message="")], user_persona="", user_status="")
        for t in texts
    ]
    return [render_samples(conv, style, lambda s: s.image)[0] for conv in turns]


@torch.no_grad()
def read_states(
    model: PegsModel,
    samples: Sequence[Sample],
    image_root: Path,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """(n, H) final-layer [IMG1] states, one per sample, at the config's read position: right after the
    prompt (``context``) or after the gold reply text (``reply``, teacher-forced as in training), exactly as
    :meth:`PegsModel.generate` reads them. Context reads go ``batch_size`` prompts a pass
    (:meth:`PegsModel.context_states`); a reply read, one sample a pass."""
    cfg = model.config
    collate = model.collator(train=False)
    device = next(model.llm.parameters()).device
    prompts = [sample_example(s, image_root, cfg.style, cfg.system_prompt, with_response=False) for s in samples]
    states: list[torch.Tensor] = []
    step = batch_size if cfg.retrieval_read == "context" else 1
    for start in range(0, len(samples), step):
        batch = collate(prompts[start : start + step]).to(device)
        embeds = model.embed(batch)  # (B, T, H), right-padded
        if cfg.retrieval_read == "context":
            states += model.context_states(embeds, batch.attention_mask.sum(dim=1)).float().cpu()  # B x (H,)
        else:
            text = gold_reply(samples[start], cfg.style)
            ids = model.tokenizer(text, add_special_tokens=False).input_ids if text else []
            states.append(model.read_reply(embeds, ids).block[0].float().cpu())  # (H,)
        if on_progress:
            on_progress(len(states), len(samples))
    return torch.stack(states)  # (n, H)


def _overlap(student: torch.Tensor, teacher: torch.Tensor, k: int = 10) -> float:
    """Mean share of the teacher's top-k that the student also ranks in its top-k. (n, N) scores each."""
    k = min(k, student.shape[1])
    a, b = student.topk(k, dim=-1).indices, teacher.topk(k, dim=-1).indices  # (n, k)
    return float((a.unsqueeze(-1) == b.unsqueeze(1)).any(-1).float().mean())


def _gold_rows(
    samples: Sequence[Sample], image_root: Path, paths: Sequence[Path]
) -> tuple[torch.Tensor, dict[str, int]]:
    """(n,) candidate row of each reading's gold sticker (-1: none, or not a candidate), and how many gold
    stickers were left out of the gold term, by reason."""
    row = {path: i for i, path in enumerate(paths)}
    gold = torch.full((len(samples),), -1, dtype=torch.long)
    left_out: dict[str, int] = {}
    for i, sample in enumerate(samples):
        if sample.response_image:
            target = row.get((image_root / sample.response_image[0]).resolve())
            if target is None:
                left_out["gold sticker not in the index"] = left_out.get("gold sticker not in the index", 0) + 1
            else:
                gold[i] = target
    if left_out:
        log.warning("distill: %s", left_out)
    return gold, left_out


def _readings(
    model: PegsModel, samples: Sequence[Sample], index: StickerIndex, library: int, seed: int
) -> tuple[list[Sample], int]:
    """The turns, then each later turn read as an opening, then the library readings; and the openings' count.
    A served chat starts with a lone message, so each later turn is also read as one (pegs/send.py measured why)."""
    style = model.config.style
    readings = [*samples, *(opening(s, style) for s in samples if s.history)]
    openings = len(readings) - len(samples)
    if library and model.config.retrieval_read == "context":
        readings += library_readings(index, library, style, seed)
    return readings, openings


def _loss(logits: torch.Tensor, teacher: torch.Tensor, gold: torch.Tensor, gold_weight: float) -> torch.Tensor:
    """(b, N) logits and teacher distribution, (b,) gold rows (-1: none) -> the KL to the teacher plus
    ``gold_weight`` x the gold sticker's cross-entropy, each per reading and averaged over the batch, so the
    gold term weighs as many readings as have a gold sticker."""
    loss = F.kl_div(F.log_softmax(logits, dim=-1), teacher, reduction="batchmean")
    has_gold = gold >= 0
    if gold_weight > 0 and bool(has_gold.any()):
        loss = loss + gold_weight * F.cross_entropy(logits[has_gold], gold[has_gold], reduction="sum") / len(gold)
    return loss


def distill_retrieval(
    model: PegsModel,
    samples: Sequence[Sample],
    image_root: Path | str,
    index: StickerIndex,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    teacher_tau: float = 0.05,
    gold_weight: float = 0.2,
    library: int = LIBRARY_STICKERS,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> DistillResult:
    """Fit ``model.ret_heads`` in place on ``samples`` (all turns) against ``index``'s rankings.

    The candidates are the index's stickers (the library's annotated ones). Besides the turns (and each later
    turn read as an opening), ``library`` stickers' annotation sentences are read as lone messages
    (:func:`library_readings`) where the config reads [IMG1] right after the prompt (``retrieval_read="context"``);
    a ``reply`` read sits after a reply those sentences do not have, so there they are left out. Loss per step,
    over a batch of readings: ``KL(softmax(teacher / teacher_tau) || softmax(cos / tau))`` over every candidate, plus
    ``gold_weight`` x cross-entropy of the gold sticker for each reading that has one, both averaged over the
    batch. (The gold term used to be averaged over the readings with gold alone, so one gold reading among 64
    weighed as much as 64; with the library readings, which have none, that term took over: on the session-5
    demo's states the fresh-chat polarity of four fitting seeds went from 19-21 of 30 to 23-25.)
    ``on_progress`` is called while reading states (one call per turn), then once per fitting step.
    """
    if model.ret_heads is None:
        raise ValueError("this PEGS model has no retrieval tokens (n_ret_tokens = 0): there are no heads to fit")
    if steps < 1:
        raise ValueError(f"retrieval distillation needs at least 1 step, got {steps}")
    if len(samples) < 2:
        raise ValueError(f"retrieval distillation needs at least 2 training turns, got {len(samples)}")
    start = time.perf_counter()
    turns = len(samples)
    samples, openings = _readings(model, samples, index, library, seed)
    image_root = Path(image_root)
    paths = [index.library.image_path(s).resolve() for s in index.stickers]
    gold, left_out = _gold_rows(samples, image_root, paths)

    queries = index.embedder.embed([teacher_text(s) for s in samples])  # (n, d), L2-normalised
    teacher_scores = torch.from_numpy(np.asarray(queries, dtype=np.float32) @ np.asarray(index.ann.vectors).T)
    teacher = F.softmax(teacher_scores / teacher_tau, dim=-1)  # (n, N)
    reading = (lambda done, total: on_progress(done, total + steps)) if on_progress else None
    states = read_states(model, samples, image_root, reading)  # (n, H)
    pooled = model.pooled_features(paths).cpu()  # (N, P)

    heads = model.ret_heads
    device, dtype = heads.text.weight.device, heads.text.weight.dtype
    with torch.no_grad():
        before = heads.embed_text(states.to(device, dtype)) @ heads.embed_image(pooled.to(device, dtype)).T
    mu, sd = states.mean(0), states.std(0) + 1e-4  # (H,), (H,)
    torch.manual_seed(seed)
    text = nn.Linear(states.shape[1], heads.text.out_features)  # fitted on standardised states
    image = nn.Linear(pooled.shape[1], heads.image.out_features)
    image.load_state_dict(heads.image.state_dict())  # the sticker side continues from its aligned start
    optimizer = torch.optim.AdamW([*text.parameters(), *image.parameters()], lr=lr, weight_decay=weight_decay)
    z = (states - mu) / sd  # (n, H)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for step in range(steps):
        j = torch.randperm(len(z), generator=generator)[:batch_size]  # (b,)
        logits = F.normalize(text(z[j]), dim=-1) @ F.normalize(image(pooled), dim=-1).T / model.config.tau  # (b, N)
        loss = _loss(logits, teacher[j], gold[j], gold_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_progress:
            on_progress(len(samples) + step + 1, len(samples) + steps)
    with torch.no_grad():  # fold the standardisation into the text head: W (h - mu) / sd + b = (W / sd) h + b'
        weight = text.weight / sd  # (dim, H)
        heads.text.weight.copy_(weight.to(device, dtype))
        heads.text.bias.copy_((text.bias - weight @ mu).to(device, dtype))
        heads.image.load_state_dict({k: v.to(device, dtype) for k, v in image.state_dict().items()})
        after = heads.embed_text(states.to(device, dtype)) @ heads.embed_image(pooled.to(device, dtype)).T
    result = DistillResult(
        turns=turns,
        openings=openings,
        gold=int((gold >= 0).sum()),
        library=len(samples) - turns - openings,
        left_out=left_out,
        losses=losses,
        overlap_before=_overlap(before[:turns].cpu(), teacher_scores[:turns]),  # on the turns as they stand
        overlap_after=_overlap(after[:turns].cpu(), teacher_scores[:turns]),
        seconds=round(time.perf_counter() - start, 1),
    )
    log.info(
        "distill: %d turns (%d with gold), %d library readings, loss %.4f -> %.4f, top-10 overlap with the index "
        "%.2f -> %.2f",
        result.turns,
        result.gold,
        result.library,
        losses[0] if losses else float("nan"),
        losses[-1] if losses else float("nan"),
        result.overlap_before,
        result.overlap_after,
    )
    return result
