"""Evaluation: every metric result carries an interval and a signature of how it was computed.

* text metrics: ``score_texts`` / ``TextScorer`` (BLEU both ways, ROUGE, METEOR, CIDEr-D, BERTScore, Distinct-n);
* sticker metrics: ``score_multimodal`` with a CLIP or an honest proxy encoder (``load_encoder``), and
  ``sticker_fit`` (does the reply's sticker label suit the user's state; labels only);
* retrieval protocols: ``score_retrieval`` (1+9, 1+999, full pool), ``split_seen``, ``send_decisions``;
* LLM judges: ``empathy_judge``, ``consistency_judge``, ``RankingJudge``; EPITOME: ``EpitomeScorer``;
* predictions and reports: ``predict``, ``score_predictions``, ``write_report``; dataset quality:
  ``dataset_quality``.
"""

from stickerconv.evaluate.encoders import load_encoder
from stickerconv.evaluate.epitome import EpitomeScorer, train_classifier
from stickerconv.evaluate.judges import JudgeConfig, RankingJudge, consistency_judge, empathy_judge
from stickerconv.evaluate.multimodal import score_multimodal, sticker_fit
from stickerconv.evaluate.pairwise import BertScoreConfig
from stickerconv.evaluate.predict import load_items, load_predictions, predict
from stickerconv.evaluate.quality import dataset_quality
from stickerconv.evaluate.report import write_report
from stickerconv.evaluate.retrieval import IndexScorer, score_retrieval, send_decisions, split_seen
from stickerconv.evaluate.score import score_predictions
from stickerconv.evaluate.signature import MetricResult
from stickerconv.evaluate.text import (
    GROUPS,
    METRICS,
    TextMetricsConfig,
    TextMetricsError,
    TextScorer,
    score_texts,
)

__all__ = [
    "GROUPS",
    "METRICS",
    "BertScoreConfig",
    "EpitomeScorer",
    "IndexScorer",
    "JudgeConfig",
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
