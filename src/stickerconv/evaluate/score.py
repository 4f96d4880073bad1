"""Scoring a predictions file: the metric families over the same samples, each a ``MetricResult``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stickerconv.evaluate.predict import pred_text
from stickerconv.evaluate.signature import MetricResult
from stickerconv.evaluate.text import TextScorer, resolve_metrics


def score_predictions(
    records: Sequence[dict[str, Any]],
    scorer: TextScorer,
    metrics: Sequence[str] | None = None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """Text metrics of the predicted texts against the gold ones (``<IMG>`` placeholders removed)."""
    hypotheses = [pred_text(r) for r in records]
    references = [r["response_text"] for r in records]
    return scorer.score(hypotheses, references, resolve_metrics(metrics), bootstrap, seed)
