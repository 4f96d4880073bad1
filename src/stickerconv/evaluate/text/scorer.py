"""Text metrics of responses against gold responses: one entry point, ``score_texts``.

It computes the paper's text metrics (method reference §6.1-6.3) offline: BLEU-1..4 in the paper's
NLTK convention and in sacrebleu's, ROUGE-1/2/L/Lsum, METEOR, CIDEr-D, BERTScore and Distinct-1/2/3
in both forms. Every result carries a 95% bootstrap interval (items resampled, the same resamples
for every metric) and a signature of how it was computed. ``TextScorer`` keeps the slow-to-load
parts (WordNet, the BERTScore model) for repeated calls; ``score_texts`` is the one-call form.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stickerconv.evaluate.bootstrap import Bootstrap, Estimate, mean_statistic
from stickerconv.evaluate.signature import MetricResult, bootstrap_fields, version_field
from stickerconv.evaluate.text import bleu, distinct, tokens
from stickerconv.evaluate.text.cider import MAX_ORDER as CIDER_ORDER
from stickerconv.evaluate.text.cider import SIGMA, cider_d
from stickerconv.evaluate.text.pairwise import ROUGE_TYPES, BertScore, BertScoreConfig, Meteor, rouge

log = logging.getLogger(__name__)

GROUPS: dict[str, tuple[str, ...]] = {
    "bleu": tuple(f"bleu{n}" for n in range(1, 5)),
    "sacrebleu": tuple(f"sacrebleu{n}" for n in range(1, 5)),
    "rouge": ROUGE_TYPES,
    "meteor": ("meteor",),
    "cider": ("cider",),
    "bertscore": ("bertscore_p", "bertscore_r", "bertscore_f1"),
    "dist": tuple(f"dist{n}_{form}" for form in ("intra", "corpus") for n in distinct.ORDERS),
}
METRICS: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)


class TextMetricsError(ValueError):
    """Inputs or metric names that cannot be scored, with what would be accepted."""


@dataclass(frozen=True)
class TextMetricsConfig:
    """Conventions that change the numbers; each shows in the signatures."""

    paper_bleu3: bool = False  # BLEU-3 weights (0.33, 0.33, 0.33, 0) as originally written, not thirds
    sacrebleu_tokenize: str = "13a"
    sacrebleu_smooth: str = "exp"
    bertscore: BertScoreConfig = field(default_factory=BertScoreConfig)
    nltk_data: Path | None = None  # where the WordNet copy goes; None: $STICKERCONV_NLTK_DATA or the user cache


def resolve_metrics(names: Sequence[str] | None) -> list[str]:
    """Metric names from metric or group names (``bleu`` = bleu1..4), in registry order; None = all."""
    if names is None:
        return list(METRICS)
    if isinstance(names, str):
        names = [names]
    wanted: set[str] = set()
    for name in names:
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in METRICS:
            wanted.add(name)
        else:
            raise TextMetricsError(
                f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}; groups: {', '.join(GROUPS)}"
            )
    return [m for m in METRICS if m in wanted]


def _check_texts(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    for role, texts in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(texts, str):
            raise TextMetricsError(f"{role} must be a list of strings, not one string")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TextMetricsError(
                f"{role}[{bad}] is {type(texts[bad]).__name__}, not a string (one reference string per sample)"
            )
    if len(hypotheses) != len(references):
        raise TextMetricsError(f"{len(hypotheses)} hypotheses but {len(references)} references; give one each")
    if not hypotheses:
        raise TextMetricsError("nothing to score: no hypotheses and no references")


class TextScorer:
    """Scores hypothesis/reference lists; loads WordNet and the BERTScore model on first need."""

    def __init__(self, config: TextMetricsConfig | None = None) -> None:
        from sacrebleu.metrics import BLEU

        self.config = config = config or TextMetricsConfig()
        if config.sacrebleu_tokenize not in BLEU.TOKENIZERS:
            raise TextMetricsError(
                f"unknown sacrebleu tokenizer {config.sacrebleu_tokenize!r}; valid: {', '.join(BLEU.TOKENIZERS)}"
            )
        if config.sacrebleu_smooth not in BLEU.SMOOTH_DEFAULTS:
            raise TextMetricsError(
                f"unknown sacrebleu smoothing {config.sacrebleu_smooth!r}; valid: {', '.join(BLEU.SMOOTH_DEFAULTS)}"
            )
        self._meteor: Meteor | None = None
        self._bertscore: BertScore | None = None

    def score(
        self,
        hypotheses: Sequence[str],
        references: Sequence[str],
        metrics: Sequence[str] | None = None,
        bootstrap: int = 1000,
        seed: int = 0,
    ) -> dict[str, MetricResult]:
        """Each requested metric (all by default) of ``hypotheses[i]`` against ``references[i]``.

        ``bootstrap`` is the number of resamples behind each 95% interval (0: none); ``seed`` fixes them.
        """
        resampler = Bootstrap(bootstrap, seed)
        return with_intervals(self.estimates(hypotheses, references, metrics), len(hypotheses), resampler)

    def estimates(
        self, hypotheses: Sequence[str], references: Sequence[str], metrics: Sequence[str] | None = None
    ) -> list[Estimate]:
        """The scores before their intervals, in registry order (``score`` = this + ``with_intervals``)."""
        _check_texts(hypotheses, references)
        names = resolve_metrics(metrics)
        hyps, refs = [tokens.clean(t) for t in hypotheses], [tokens.clean(t) for t in references]
        by_name = {e.name: e for e in self._estimates(set(names), hyps, refs)}
        return [by_name[name] for name in names]

    def _estimates(self, names: set[str], hyps: list[str], refs: list[str]) -> list[Estimate]:
        wanted = {group for group, members in GROUPS.items() if names & set(members)}
        out: list[Estimate] = []
        hyp_words: list[list[str]] = []
        ref_words: list[list[str]] = []
        if wanted & {"bleu", "meteor"}:  # Treebank tokenising is slow: once for both
            hyp_words, ref_words = [tokens.treebank_words(t) for t in hyps], [tokens.treebank_words(t) for t in refs]
        for group in GROUPS:
            if group not in wanted:
                continue
            started = time.perf_counter()
            if group == "bleu":
                out += bleu.nltk_bleu(ref_words, hyp_words, self.config.paper_bleu3)
            elif group == "sacrebleu":
                out += bleu.sacrebleu_bleu(refs, hyps, self.config.sacrebleu_tokenize, self.config.sacrebleu_smooth)
            elif group == "rouge":
                out += rouge(refs, hyps, [t for t in ROUGE_TYPES if t in names])
            elif group == "meteor":
                self._meteor = self._meteor or Meteor(nltk_data=self.config.nltk_data)
                out.append(self._meteor.estimate(ref_words, hyp_words))
            elif group == "cider":
                out.append(_cider(refs, hyps))
            elif group == "bertscore":
                self._bertscore = self._bertscore or BertScore(self.config.bertscore)
                out += self._bertscore.estimates(refs, hyps)
            else:
                out += _distinct(hyps)
            log.info("%s: %.2f s for %d samples", group, time.perf_counter() - started, len(hyps))
        return out


def with_intervals(estimates: Sequence[Estimate], n_items: int, resampler: Bootstrap) -> dict[str, MetricResult]:
    """Results with 95% intervals: the bootstrap's (one set of resamples for all) or the metric's own."""
    statistics = [e.statistic for e in estimates if e.statistic is not None]
    bootstrapped = iter(resampler.intervals(n_items, statistics))
    results = {}
    for estimate in estimates:
        if estimate.statistic is not None:
            interval, interval_fields = next(bootstrapped), bootstrap_fields(resampler.resamples, resampler.seed)
        elif resampler.resamples:
            interval, interval_fields = estimate.interval, {"ci": estimate.interval_method}
        else:
            interval, interval_fields = None, {}
        per_item = None
        if estimate.per_item is not None:  # NaN marks a skipped sample; JSON has no NaN
            per_item = [None if math.isnan(v) else float(v) for v in estimate.per_item]
        results[estimate.name] = MetricResult(
            name=estimate.name,
            score=estimate.score,
            n_items=n_items,
            ci=interval,
            per_item=per_item,
            signature=estimate.fields | interval_fields | {"version": version_field(*estimate.libraries)},
        )
    return results


def _cider(refs: list[str], hyps: list[str]) -> Estimate:
    values = cider_d([tokens.whitespace_words(t) for t in refs], [tokens.whitespace_words(t) for t in hyps])
    fields = {
        "variant": "cider-d(coco-caption)",
        "n": str(CIDER_ORDER),
        "sigma": f"{SIGMA:g}",
        "tok": "whitespace",
        "case": "mixed",
        "idf": "eval-refs",
        "stat": "mean",
        "nrefs": "1",
    }
    return Estimate.resampled("cider", mean_statistic(values), len(values), fields, per_item=values)


def _distinct(hyps: list[str]) -> list[Estimate]:
    words = [tokens.whitespace_words(t, lowercase=True) for t in hyps]
    fields = {"tok": "whitespace", "case": "lc", "of": "hypotheses"}
    intra, corpus = [], []
    for n in distinct.ORDERS:
        statistic, per_item = distinct.intra_statistic(words, n)
        name, form = f"dist{n}_intra", fields | {"form": "mean-per-response"}
        intra.append(Estimate.resampled(name, statistic, len(words), form, per_item=per_item))
        score, interval = distinct.corpus_score(words, n)
        form = fields | {"form": "corpus"}
        corpus.append(Estimate(f"dist{n}_corpus", score, form, (), interval=interval, interval_method="jackknife"))
    return intra + corpus


def score_texts(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    config: TextMetricsConfig | None = None,
) -> dict[str, MetricResult]:
    """Score once with a fresh :class:`TextScorer` (use one scorer to score several systems)."""
    return TextScorer(config).score(hypotheses, references, metrics, bootstrap, seed)
