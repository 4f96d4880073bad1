"""One small metric protocol, in the spirit of sacrebleu: a metric has a ``name`` and ``score(data) ->
MetricResult``, and the result carries its value (``score``), its 95% interval (``ci``) and the signature of
how it was computed (``signature_text``: ``name|key:value|...|version:stickerconv-...``).

The scorers compute families of metrics at once (BLEU-1..4 from one count of n-grams, MM-Relevance P/R/F
from one encoding, a judge's mean and agreement from one set of answers), so each family keeps its own
function, and :class:`FamilyMetric` is the thin adapter that turns "this family, this name" into a
:class:`Metric`. The registries build every metric that the given resources allow:
:func:`prediction_metrics` for predictions (text, sticker, EPITOME and LLM-judge metrics) and
:func:`quality_metrics` for datasets. Scoring one metric computes its whole family; to score many, call
the family (``score_predictions``, ``score_multimodal``, ...) once, as ``eval score`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from stickerconv.evaluate.signature import MetricResult, version_field
from stickerconv.schema import PredictionRecord

if TYPE_CHECKING:
    from stickerconv.evaluate.judges.epitome import EpitomeScorer
    from stickerconv.evaluate.judges.llm_judges import JudgeConfig
    from stickerconv.evaluate.multimodal.encoders import ImageTextEncoder
    from stickerconv.evaluate.quality.metrics import QualityConfig
    from stickerconv.evaluate.text.scorer import TextScorer
    from stickerconv.llm import ChatModel

T_contra = TypeVar("T_contra", contravariant=True)
Predictions = Sequence[PredictionRecord]

MULTIMODAL = ("mm_relevance_p", "mm_relevance_r", "mm_relevance_f", "mm_relevance_opt", "clip_score", "clip_score_gt")
STICKER_FREQUENCY = ("sticker_frequency", "sticker_frequency_gt")
STICKER_FIT = ("sticker_fit", "sticker_fit_gt")
ROLES = ("user", "system")
JUDGED = ("mean", "parse_failures")  # the judge results every run has (the others need several items or samples)
# dataset_quality's figures that are one number each: the path into its result.
QUALITY = (
    "turns_per_session",
    *(
        f"diversity.{role}_dist{n}_{form}"
        for role in ("user", "system")
        for form in ("corpus", "intra")
        for n in (1, 2, 3)
    ),
    "diversity.user_self_bleu4",
    "diversity.system_self_bleu4",
    "diversity.distinct_openings",
    "repetition.exact_repeat_share",
    "repetition.near_repeat_share",
    "stickers.per_session",
    "stickers.turn_share.user",
    "stickers.turn_share.system",
    "stickers.top10_share",
    *(
        f"emotion_agreement.{role}.{stat}"
        for role in ("user", "system")
        for stat in ("label_match", "polarity_conflict")
    ),
)


class MetricError(ValueError):
    """A metric that has no value on this data (e.g. a CLIP score of a system that sends no sticker)."""


@runtime_checkable
class Metric(Protocol[T_contra]):
    """A named metric: ``score(data)`` gives one :class:`MetricResult` whose signature names it and the version."""

    @property
    def name(self) -> str: ...

    def score(self, data: T_contra, /) -> MetricResult: ...


@dataclass(frozen=True)
class FamilyMetric:
    """The metric ``name`` of a family: a function from the data to its results by name."""

    name: str
    family: Callable[[Any], dict[str, MetricResult]]

    def score(self, data: Any, /) -> MetricResult:
        results = self.family(data)
        if self.name not in results:
            raise MetricError(f"{self.name}: no result on this data (the family gave {', '.join(results) or 'none'})")
        return results[self.name]


@dataclass(frozen=True)
class QualityMetric:
    """One figure of :func:`~stickerconv.evaluate.quality.metrics.dataset_quality` (``path`` into its result) of
    a conversations file, as a result: no interval (the figure is over the whole dataset), the sessions as items."""

    path: str
    config: QualityConfig | None = None

    @property
    def name(self) -> str:
        return "quality_" + self.path.replace(".", "_")

    def score(self, data: Path | str, /) -> MetricResult:
        from stickerconv.evaluate.quality.metrics import QualityConfig, dataset_quality

        config = self.config or QualityConfig()
        result = dataset_quality(data, config)
        value: Any = result
        for part in self.path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            raise MetricError(f"{self.name}: {data} has no value for it (too few sessions or stickers)")
        fields = {
            "figure": self.path,
            "of": "conversations",
            "sessions": str(result["sessions"]),
            "self_bleu_sample": str(config.self_bleu_sample),
            "near_repeat": f"{config.near_repeat:g}",
            "seed": str(config.seed),
            "version": version_field("vaderSentiment", "nltk"),
        }
        return MetricResult(name=self.name, score=float(value), n_items=result["sessions"], signature=fields)


def _family(names: Sequence[str], family: Callable[[Any], dict[str, MetricResult]]) -> dict[str, Metric[Any]]:
    return {name: FamilyMetric(name, family) for name in names}


def prediction_metrics(
    *,
    scorer: TextScorer | None = None,
    text: Sequence[str] | None = None,
    encoder: ImageTextEncoder | None = None,
    epitome: EpitomeScorer | None = None,
    chat: ChatModel | None = None,
    judge_config: JudgeConfig | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Metric[Predictions]]:
    """Every metric of predictions that these resources allow, by name: the text metrics (``text``, names
    or groups; all by default) with ``scorer`` (a fresh :class:`TextScorer` by default), the sticker fit and
    frequency and the send decisions always, the §6.6 metrics with an ``encoder``, EPITOME with its
    classifiers, the empathy and consistency judges with a ``chat`` model (``judge_config`` sets their
    sampling; its bootstrap and seed win over these for the judges)."""
    from stickerconv.evaluate.multimodal import scores
    from stickerconv.evaluate.predict import pred_text
    from stickerconv.evaluate.retrieval.protocols import send_decisions
    from stickerconv.evaluate.text.scorer import TextScorer, resolve_metrics

    text_scorer = scorer or TextScorer()
    names = resolve_metrics(text)

    def text_family(records: Predictions) -> dict[str, MetricResult]:
        hypotheses = [pred_text(r) for r in records]
        references = [scores.gold_text(r, i) for i, r in enumerate(records)]
        return text_scorer.score(hypotheses, references, names, bootstrap, seed)

    metrics = _family(names, text_family)
    metrics |= _family(STICKER_FIT, lambda records: scores.sticker_fit(records, bootstrap, seed))
    metrics |= _family(STICKER_FREQUENCY, lambda records: scores.sticker_frequency(records, bootstrap, seed))
    metrics |= _family(("send_precision", "send_recall", "send_f1"), lambda r: send_decisions(r, bootstrap, seed))
    if encoder is not None:
        suffix = scores.PROXY_SUFFIX if encoder.proxy else ""
        family = lambda records: scores.score_multimodal(records, encoder, bootstrap, seed)  # noqa: E731
        metrics |= _family([name + suffix for name in MULTIMODAL], family)
    if epitome is not None:
        names = [f"epitome_{m}_{stat}" for m in ("er", "ip", "ex") for stat in ("pred", "gt", "diff")]
        metrics |= _family(names, lambda records: epitome.score(records, bootstrap, seed))
    if chat is not None:
        metrics |= judge_metrics(chat, judge_config)
    return metrics


def judge_metrics(chat: ChatModel, config: JudgeConfig | None = None) -> dict[str, Metric[Predictions]]:
    """The empathy and consistency judges' always-present results as metrics. ``score`` runs the judge to the
    end (``asyncio.run``); inside an event loop, await ``judge.judge(records)`` instead."""
    from stickerconv.evaluate.judges.llm_judges import consistency_judge, empathy_judge

    metrics: dict[str, Metric[Predictions]] = {}
    for make in (empathy_judge, consistency_judge):
        judge = make(chat, config)

        def family(records: Predictions, judge: Any = judge) -> dict[str, MetricResult]:
            return asyncio.run(judge.judge(records)).metrics

        metrics |= _family([f"{judge.spec.name}_{stat}" for stat in JUDGED], family)
    return metrics


def quality_metrics(config: QualityConfig | None = None) -> dict[str, Metric[Path | str]]:
    """Every one-number figure of a dataset's quality report, as a metric of a conversations file."""
    metrics = [QualityMetric(path, config) for path in QUALITY]
    return {metric.name: metric for metric in metrics}
