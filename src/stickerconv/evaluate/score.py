"""Scoring a predictions file: every metric family over the same samples, each a ``MetricResult``.

Text metrics always; sticker fit (labels only, so always); sticker metrics (frequency, MM-Relevance,
CLIP score, when-to-send) with an image-text encoder; LLM judges (empathy, consistency, and a ranking
across systems) when a judge model is given, on a seeded subset of items that is the same for every system.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from stickerconv.evaluate.judges.llm_judges import JudgeConfig, RankingJudge, consistency_judge, empathy_judge
from stickerconv.evaluate.multimodal.encoders import ImageTextEncoder
from stickerconv.evaluate.multimodal.scores import score_multimodal, sticker_fit
from stickerconv.evaluate.predict import pred_text
from stickerconv.evaluate.retrieval.protocols import send_decisions
from stickerconv.evaluate.signature import MetricResult
from stickerconv.evaluate.text.scorer import TextScorer, resolve_metrics
from stickerconv.llm import ChatModel
from stickerconv.schema import PredictionRecord, prediction_fields

Records = Sequence[PredictionRecord]  # models, or the plain dicts load_predictions gives


def score_predictions(
    records: Records,
    scorer: TextScorer,
    metrics: Sequence[str] | None = None,
    *,
    encoder: ImageTextEncoder | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """Text metrics of the predicted texts against the gold ones (``<IMG>`` removed); the sticker fit
    (no result for a system that sends no labelled sticker); with an ``encoder``, the sticker metrics and
    the when-to-send precision/recall/F1."""
    hypotheses = [pred_text(r) for r in records]
    references = [prediction_fields(r)["response_text"] for r in records]
    results = scorer.score(hypotheses, references, resolve_metrics(metrics), bootstrap, seed)
    if encoder is not None:
        results |= score_multimodal(records, encoder, bootstrap, seed)
        results |= send_decisions(records, bootstrap, seed)
    return results | sticker_fit(records, bootstrap, seed)


def judge_subset(n_items: int, size: int | None, seed: int) -> list[int]:
    """A seeded sample of item positions (sorted), the same for every system of a comparison."""
    if size is None or size >= n_items:
        return list(range(n_items))
    return sorted(random.Random(seed).sample(range(n_items), size))


async def judge_systems(
    systems: Mapping[str, Records], chat: ChatModel, config: JudgeConfig | None = None, subset: Sequence[int] = ()
) -> tuple[dict[str, dict[str, MetricResult]], dict[str, MetricResult]]:
    """Empathy and consistency per system, and the joint ranking when there are several systems,
    all on the ``subset`` positions. Returns (per-system results, ranking results)."""
    chosen = {name: [records[i] for i in subset] for name, records in systems.items()}
    per_system: dict[str, dict[str, MetricResult]] = {}
    for name, records in chosen.items():
        per_system[name] = {}
        for judge in (empathy_judge(chat, config), consistency_judge(chat, config)):
            per_system[name] |= (await judge.judge(records)).metrics
    ranking = (await RankingJudge(chat, config).rank(chosen)).metrics if len(chosen) > 1 else {}
    return per_system, ranking
