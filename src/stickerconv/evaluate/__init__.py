"""Evaluation: every metric result carries an interval and a signature of how it was computed.

* text metrics: ``score_texts`` / ``TextScorer`` (BLEU both ways, ROUGE, METEOR, CIDEr-D, BERTScore, Distinct-n);
* sticker metrics: ``score_multimodal`` with a CLIP or an honest proxy encoder (``load_encoder``), and
  ``sticker_fit`` (does the reply's sticker label suit the user's state; labels only);
* retrieval protocols: ``score_retrieval`` (1+9, 1+999, full pool), ``split_seen``, ``send_decisions``;
* LLM judges: ``empathy_judge``, ``consistency_judge``, ``RankingJudge``; EPITOME: ``EpitomeScorer``;
* predictions and reports: ``predict``, ``score_predictions``, ``write_report``; dataset quality:
  ``dataset_quality``;
* the metric protocol (``Metric``: ``name`` and ``score(data) -> MetricResult``) and its registries,
  ``prediction_metrics`` and ``quality_metrics``.

The records the scorers read are :class:`stickerconv.schema.Prediction` (or their plain JSON dicts).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use: ``import stickerconv.evaluate.text.bleu`` must not pull in the judges,
# the encoders and torch.
_EXPORTS = {
    "BertScoreConfig": "stickerconv.evaluate.text.pairwise",
    "EpitomeScorer": "stickerconv.evaluate.judges.epitome",
    "GROUPS": "stickerconv.evaluate.text.scorer",
    "IndexScorer": "stickerconv.evaluate.retrieval.protocols",
    "JudgeConfig": "stickerconv.evaluate.judges.llm_judges",
    "METRICS": "stickerconv.evaluate.text.scorer",
    "Metric": "stickerconv.evaluate.protocol",
    "MetricError": "stickerconv.evaluate.protocol",
    "MetricResult": "stickerconv.evaluate.signature",
    "RankingJudge": "stickerconv.evaluate.judges.llm_judges",
    "TextMetricsConfig": "stickerconv.evaluate.text.scorer",
    "TextMetricsError": "stickerconv.evaluate.text.scorer",
    "TextScorer": "stickerconv.evaluate.text.scorer",
    "consistency_judge": "stickerconv.evaluate.judges.llm_judges",
    "dataset_quality": "stickerconv.evaluate.quality.metrics",
    "empathy_judge": "stickerconv.evaluate.judges.llm_judges",
    "load_encoder": "stickerconv.evaluate.multimodal.encoders",
    "load_items": "stickerconv.evaluate.predict",
    "load_predictions": "stickerconv.evaluate.predict",
    "predict": "stickerconv.evaluate.predict",
    "prediction_metrics": "stickerconv.evaluate.protocol",
    "quality_metrics": "stickerconv.evaluate.protocol",
    "score_multimodal": "stickerconv.evaluate.multimodal.scores",
    "score_predictions": "stickerconv.evaluate.score",
    "score_retrieval": "stickerconv.evaluate.retrieval.protocols",
    "score_texts": "stickerconv.evaluate.text.scorer",
    "send_decisions": "stickerconv.evaluate.retrieval.protocols",
    "split_seen": "stickerconv.evaluate.retrieval.protocols",
    "sticker_fit": "stickerconv.evaluate.multimodal.scores",
    "train_classifier": "stickerconv.evaluate.judges.epitome",
    "write_report": "stickerconv.evaluate.report",
}

__all__ = [
    "BertScoreConfig",
    "EpitomeScorer",
    "GROUPS",
    "IndexScorer",
    "JudgeConfig",
    "METRICS",
    "Metric",
    "MetricError",
    "MetricResult",
    "RankingJudge",
    "TextMetricsConfig",
    "TextMetricsError",
    "TextScorer",
    "consistency_judge",
    "dataset_quality",
    "empathy_judge",
    "load_encoder",
    "load_items",
    "load_predictions",
    "predict",
    "prediction_metrics",
    "quality_metrics",
    "score_multimodal",
    "score_predictions",
    "score_retrieval",
    "score_texts",
    "send_decisions",
    "split_seen",
    "sticker_fit",
    "train_classifier",
    "write_report",
]

if TYPE_CHECKING:
    from stickerconv.evaluate.judges.epitome import EpitomeScorer, train_classifier
    from stickerconv.evaluate.judges.llm_judges import JudgeConfig, RankingJudge, consistency_judge, empathy_judge
    from stickerconv.evaluate.multimodal.encoders import load_encoder
    from stickerconv.evaluate.multimodal.scores import score_multimodal, sticker_fit
    from stickerconv.evaluate.predict import load_items, load_predictions, predict
    from stickerconv.evaluate.protocol import Metric, MetricError, prediction_metrics, quality_metrics
    from stickerconv.evaluate.quality.metrics import dataset_quality
    from stickerconv.evaluate.report import write_report
    from stickerconv.evaluate.retrieval.protocols import IndexScorer, score_retrieval, send_decisions, split_seen
    from stickerconv.evaluate.score import score_predictions
    from stickerconv.evaluate.signature import MetricResult
    from stickerconv.evaluate.text.pairwise import BertScoreConfig
    from stickerconv.evaluate.text.scorer import (
        GROUPS,
        METRICS,
        TextMetricsConfig,
        TextMetricsError,
        TextScorer,
        score_texts,
    )


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'stickerconv.evaluate' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
