"""Evaluation: text metrics of responses, each result with a bootstrap interval and a signature.

``score_texts(hypotheses, references)`` gives the paper's text metrics offline (see ``text``);
judges, multimodal and retrieval protocols build on the same ``MetricResult``.
"""

from stickerconv.evaluate.pairwise import BertScoreConfig
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
    "MetricResult",
    "TextMetricsConfig",
    "TextMetricsError",
    "TextScorer",
    "score_texts",
]
