"""The send decision: when a PEGS reply carries a sticker (a PEGS extension; the paper sends on greedy [IMG1]).

Why a threshold: training puts the [IMG] block after the reply text and EOS after a reply without one, so at the
end of a reply the model weighs exactly two ways on: ``log p(separator + [IMG1])`` against ``log p(EOS)``.
Greedy decoding sends only when [IMG1] also beats every text token, which a model fine-tuned on a few hundred
turns never makes happen: the demo's ``small`` checkpoint sent no sticker at all. The log-ratio (the *send
score*, :meth:`PegsModel.read_reply`) still ranks replies by how much the model wants a sticker there, and a
threshold fitted on the training turns turns that ranking into a decision at the rate the data asks for.

Fitting (:func:`fit_threshold`): ``share`` (the default) puts the threshold where the share of turns over it
equals their gold assistant sticker share; ``f1`` where the when-to-send F1 against the gold sends is highest.
``share`` is the default because a briefly trained model's scores separate the gold sends only weakly, and
then the F1 optimum is to send on (nearly) every reply: always sending scores 2g / (1 + g) at a gold share g
(0.58 at 41 %), which the measured checkpoints' share cuts (training F1 0.33-0.39) do not beat. A sticker on
every reply is not what the data does; matching the share keeps its rhythm.

Why on the model's own replies (:func:`send_scores`), not the gold ones: the distill stage's reading pass could
score each turn at the end of its gold reply for free, but a ``small`` checkpoint's scores at the end of its own
replies ran 1.3 nats higher (a budget-cut reply ends where the model wanted to go on, so EOS is less likely
there), and a threshold fitted on the gold replies sent on 75 % of fresh chats against a 40 % training share.
So the ``send`` stage of ``pegs train`` (and ``pegs fit-send``) replies to the training turns as the responders
do and fits on those scores: the threshold then judges the kind of score it was fitted on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from stickerconv.data.samples import IMG, STYLES, Sample
from stickerconv.pegs.config import SendConfig, SendFit
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.sequence import sample_example

log = logging.getLogger(__name__)

Target = Literal["share", "f1"]
DEFAULT_TURNS = 128  # replies written to fit on: the share's standard error is then about 4 points at 40 %


def gold_reply(sample: Sample, style: str) -> str:
    """The gold reply's text as it stands before the [IMG] block in training: the response without the
    sticker placeholder and without the style's separator (``"\\n"`` in v0), which a reading adds back."""
    separator = STYLES[style].system_sticker.split(IMG)[0]
    text = sample.response_text.split(IMG)[0]
    return text.removesuffix(separator) if separator and sample.response_image else text


def gold_sends(samples: Sequence[Sample]) -> np.ndarray:
    """(n,) bool: whether each turn's gold reply has a sticker."""
    return np.array([bool(s.response_image) for s in samples], dtype=bool)


def fitting_turns(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """The turns the threshold is fitted on: all ``n``, or a seeded sample of ``limit`` (sorted)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


@torch.no_grad()
def send_scores(
    model: PegsModel,
    samples: Sequence[Sample],
    image_root: Path,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(n,) send scores at the end of the model's own readable reply to each turn's prompt, written as the
    responders write it (:meth:`PegsModel.draft`, the checkpoint's decoding settings): the scores the
    threshold will judge. Replies are decoded ``batch_size`` at a time: on a CPU a batch of 8 costs about
    what one reply does, because reading the weights, not the arithmetic, bounds each step."""
    cfg = model.config
    prompts = [sample_example(s, image_root, cfg.style, cfg.system_prompt, with_response=False) for s in samples]
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        scores += [d.end.send_score for d in model.draft(prompts[start : start + batch_size])]
        if on_progress:
            on_progress(len(scores), len(prompts))
    return np.array(scores, dtype=np.float64)


def _decisions(scores: np.ndarray, gold: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """(share, precision, recall, F1) of ``scores > threshold`` against ``gold``; a ratio over nothing is 0."""
    pred = scores > threshold
    hits = float((pred & gold).sum())
    precision = hits / pred.sum() if pred.any() else 0.0
    recall = hits / gold.sum() if gold.any() else 0.0
    f1 = 2 * hits / (pred.sum() + gold.sum()) if (pred.any() or gold.any()) else 0.0
    return float(pred.mean()), float(precision), float(recall), float(f1)


def _cuts(scores: np.ndarray) -> np.ndarray:
    """Every distinct decision on ``scores``: a cut below the lowest, between each two neighbours, at the top."""
    values = np.unique(scores)  # sorted ascending
    return np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1]]])


def fit_threshold(scores: np.ndarray, gold: np.ndarray, target: Target = "share") -> SendFit:
    """The threshold on (n,) send scores for (n,) gold sends: ``share`` makes the share over it the closest
    to the gold share (midway between neighbouring scores, so a small shift in scores moves few decisions);
    ``f1`` maximises the when-to-send F1, ties broken by the share closest to the gold one."""
    scores, gold = np.asarray(scores, dtype=np.float64), np.asarray(gold, dtype=bool)
    if scores.shape != gold.shape or scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"one score per gold decision is needed, got {scores.shape} scores and {gold.shape} decisions")
    if not np.isfinite(scores).all():
        raise ValueError("send scores must be finite")
    gold_share = float(gold.mean())
    cuts = _cuts(scores)
    shares = np.array([(scores > c).mean() for c in cuts])  # (C,) falling as the cut rises
    if target == "share":
        best = int(np.argmin(np.abs(shares - gold_share)))
    elif target == "f1":
        f1s = np.array([_decisions(scores, gold, c)[3] for c in cuts])
        best = int(np.lexsort((np.abs(shares - gold_share), -f1s))[0])
    else:
        raise ValueError(f"unknown send-threshold target {target!r}; choose share or f1")
    threshold = float(cuts[best])
    share, precision, recall, f1 = _decisions(scores, gold, threshold)
    return SendFit(
        threshold=threshold,
        target=target,
        turns=len(scores),
        gold_share=gold_share,
        share=share,
        precision=precision,
        recall=recall,
        f1=f1,
    )


def use_fit(model: PegsModel, fit: SendFit) -> None:
    """Give ``model`` the fitted threshold; its decision mode (threshold or greedy) stays what the config says."""
    model.config = model.config.model_copy(update={"send": SendConfig(decision=model.config.send.decision, fit=fit)})
    log.info(
        "send threshold %.3f (%s): sends on %.1f%% of %d training turns (gold %.1f%%), F1 %.3f",
        fit.threshold,
        fit.target,
        100 * fit.share,
        fit.turns,
        100 * fit.gold_share,
        fit.f1,
    )


def fit_send(
    model: PegsModel,
    samples: Sequence[Sample],
    image_root: Path | str,
    target: Target = "share",
    limit: int | None = DEFAULT_TURNS,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> SendFit:
    """Reply to ``samples`` (at most ``limit`` of them, a seeded sample), fit the threshold on the scores of
    those replies against their gold sends, and give it to ``model``."""
    if not samples:
        raise ValueError("fitting the send threshold needs training turns, got none")
    chosen = [samples[i] for i in fitting_turns(len(samples), limit, seed)]
    scores = send_scores(model, chosen, Path(image_root), on_progress=on_progress)
    fit = fit_threshold(scores, gold_sends(chosen), target)
    use_fit(model, fit)
    return fit
