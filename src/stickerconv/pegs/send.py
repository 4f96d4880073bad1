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

from stickerconv.data.samples import IMG, STYLES, Sample, Style, opening
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


def _decisions(
    scores: np.ndarray, gold: np.ndarray, threshold: float, weights: np.ndarray
) -> tuple[float, float, float, float]:
    """(share, precision, recall, F1) of ``scores > threshold`` against ``gold``, each prompt counted with its
    weight; a ratio over nothing is 0."""
    pred = scores > threshold
    sent, wanted, hits = float(weights[pred].sum()), float(weights[gold].sum()), float(weights[pred & gold].sum())
    precision = hits / sent if sent else 0.0
    recall = hits / wanted if wanted else 0.0
    f1 = 2 * hits / (sent + wanted) if sent + wanted else 0.0
    return sent / float(weights.sum()), precision, recall, f1


def _cuts(scores: np.ndarray) -> np.ndarray:
    """Every distinct decision on ``scores``: a cut below the lowest, between each two neighbours, at the top."""
    values = np.unique(scores)  # sorted ascending
    return np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1]]])


def fit_threshold(
    scores: np.ndarray, gold: np.ndarray, target: Target = "share", weights: np.ndarray | None = None
) -> SendFit:
    """The threshold on (n,) send scores for (n,) gold sends: ``share`` makes the share over it the closest
    to the gold share (midway between neighbouring scores, so a small shift in scores moves few decisions);
    ``f1`` maximises the when-to-send F1, ties broken by the share closest to the gold one. ``weights`` (n,)
    count each prompt (default 1 each): the two readings of one turn (:func:`fitting_prompts`) weigh half each."""
    scores, gold = np.asarray(scores, dtype=np.float64), np.asarray(gold, dtype=bool)
    weights = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    if scores.shape != gold.shape or scores.shape != weights.shape or scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"one score per gold decision is needed, got {scores.shape} scores and {gold.shape} decisions")
    if not np.isfinite(scores).all():
        raise ValueError("send scores must be finite")
    if (weights <= 0).any():
        raise ValueError("prompt weights must be positive")
    gold_share = float(weights[gold].sum() / weights.sum())
    cuts = _cuts(scores)
    decisions = [_decisions(scores, gold, c, weights) for c in cuts]  # (C,) share falling as the cut rises
    shares = np.array([d[0] for d in decisions])
    if target == "share":
        best = int(np.argmin(np.abs(shares - gold_share)))
    elif target == "f1":
        f1s = np.array([d[3] for d in decisions])
        best = int(np.lexsort((np.abs(shares - gold_share), -f1s))[0])
    else:
        raise ValueError(f"unknown send-threshold target {target!r}; choose share or f1")
    share, precision, recall, f1 = decisions[best]
    return SendFit(
        threshold=float(cuts[best]),
        target=target,
        turns=int(round(weights.sum())),
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


def fitting_prompts(samples: Sequence[Sample], style: Style) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """The prompts the threshold is fitted on, their gold sends and weights: each turn as it stands in its
    dialogue and, when a dialogue comes before it, also as the first message of a new chat (:func:`opening`),
    the two readings weighing half each, so every turn counts once. A served chat meets both: its first
    message alone, later ones in their dialogue; and the score reads them differently (measured on the
    demo's checkpoint: fresh single-message chats scored a median 4 nats above its training turns, so a
    threshold fitted on the turns alone sent a sticker to every fresh chat)."""
    prompts: list[Sample] = []
    weights: list[float] = []
    for sample in samples:
        if sample.history:
            prompts += [sample, opening(sample, style)]
            weights += [0.5, 0.5]
        else:
            prompts.append(sample)
            weights.append(1.0)
    return prompts, gold_sends(prompts), np.array(weights)


def fit_send(
    model: PegsModel,
    samples: Sequence[Sample],
    image_root: Path | str,
    target: Target = "share",
    limit: int | None = DEFAULT_TURNS,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> SendFit:
    """Reply to ``samples`` (at most ``limit`` of them, a seeded sample) in both readings of
    :func:`fitting_prompts`, fit the threshold on the scores of those replies against their gold sends, and
    give it to ``model``."""
    if not samples:
        raise ValueError("fitting the send threshold needs training turns, got none")
    chosen = [samples[i] for i in fitting_turns(len(samples), limit, seed)]
    prompts, gold, weights = fitting_prompts(chosen, model.config.style)
    scores = send_scores(model, prompts, Path(image_root), on_progress=on_progress)
    fit = fit_threshold(scores, gold, target, weights)
    use_fit(model, fit)
    return fit
