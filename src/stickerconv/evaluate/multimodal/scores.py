"""Multimodal metrics of responses with stickers (method reference §6.6), from per-turn samples.

A system's reply is a text and at most one sticker; so is the gold reply. The paper scores the pair
with CLIP: ``sim(a, b) = 100 · cos(a, b)`` of projected, L2-normalised embeddings, no clipping.
For hypothesis H = (t̂, v̂?) and reference R = (t, v?), ``tt = sim(t̂, t)``, ``vv = sim(v̂, v)``
when both stickers exist (else 0) and ``S = tt + vv``:

* **MM-Relevance** (MMDialog's, elements paired by modality): per sample ``P = S / |H|``,
  ``R = S / |R|`` (|X| = 2 with a sticker, else 1) and ``F = 2PR / (P + R)`` (0 when S = 0), each
  averaged over samples. Hence: both stickers P = R = F = S/2; neither, all equal tt; exactly one,
  F = 2·tt/3. F is what the paper calls **f-MMr** (§6.6 decision).
* **Optimised MM-Relevance**: ``(tt + vv + sim(t̂, v) + sim(v̂, t)) / k``, k = 4 with both stickers,
  2 with one, 1 with none; missing terms are 0.
* **CLIP score** ``sim(v̂, t̂)``, averaged only over samples whose prediction has a sticker (§9
  item 41, reproduced); ``clip_score_gt`` is the same for the gold pairs. Neither is reported when
  no sample has the sticker it needs (a text-only system has no CLIP score).
* **Sticker frequency**: the share of samples with a predicted sticker, and the gold share.
* **Sticker fit** (beyond the paper): the share of predicted stickers whose emotion label is an
  appropriate answer to the user's state, by the table ``STICKER_FIT`` (and the same for the gold
  stickers). Why: MM-Relevance compares a reply with one gold reply, but a reply can fit the user
  without resembling the simulated assistant's; a user who sends a sad sticker should get a comforting
  one, not a laughing or a crying one. It needs no encoder: labels only.

Encoders come from :mod:`stickerconv.evaluate.multimodal.encoders`; with the offline proxy every metric name
ends in ``_proxy`` and its signature says what the proxy is. Intervals are the shared percentile
bootstrap (:mod:`stickerconv.evaluate.bootstrap`) over the samples each metric averages.

Samples are :class:`stickerconv.schema.Prediction` records, as models or as the plain §4.4 dicts with
predictions: ``pred_text_response`` (the misspelled ``pred_text_reponse`` is read too), ``pred_image``
(0 or 1 path) and optionally ``pred_image_metadata``; a dict needs only the fields the metric reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stickerconv.evaluate.bootstrap import Bootstrap, mean_statistic
from stickerconv.evaluate.multimodal.encoders import PROXY_SUFFIX, ImageTextEncoder, StickerImage
from stickerconv.evaluate.quality.metrics import message_polarity
from stickerconv.evaluate.signature import MetricResult, bootstrap_fields, version_field
from stickerconv.evaluate.text.tokens import clean
from stickerconv.schema import EMOTION_LABELS, PRED_TEXT_KEYS, PredictionRecord, prediction_fields

log = logging.getLogger(__name__)

Records = Sequence[PredictionRecord]
SIM_SCALE = 100.0  # sim = 100 · cos (§6.6)


class SampleRecordError(ValueError):
    """A sample record that lacks or mangles a field the metrics need, located by sample index."""

    def __init__(self, index: int, key: str, message: str):
        self.index, self.key = index, key
        super().__init__(f"sample {index}: field '{key}': {message}")


# ---------------------------------------------------------------------------------------- records
def read_samples(path: Path | str) -> list[dict[str, Any]]:
    """Sample records from a JSON array (the §4.4 file form) or a JSON Lines file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: sample {bad} is a {type(records[bad]).__name__}, not a JSON object")
    return records


def pred_text(record: PredictionRecord, index: int) -> str:
    """The predicted system text, under the correct key or the original misspelled one."""
    fields = prediction_fields(record)
    for key in PRED_TEXT_KEYS:
        value = fields.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise SampleRecordError(index, key, f"expected a string, got {type(value).__name__}")
            return value
    raise SampleRecordError(index, PRED_TEXT_KEYS[0], "missing; add the system's predicted reply to every sample")


def _sticker(record: PredictionRecord, index: int, key: str, metadata_key: str) -> StickerImage | None:
    fields = prediction_fields(record)
    paths = fields.get(key) or []
    if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
        raise SampleRecordError(index, key, "expected a list of image paths")
    if len(paths) > 1:
        raise SampleRecordError(index, key, f"{len(paths)} images; a reply has at most one sticker")
    if not paths:
        return None
    metadata = fields.get(metadata_key) or {}
    if not isinstance(metadata, Mapping):
        raise SampleRecordError(index, metadata_key, "expected a sticker dict or null")
    return StickerImage(paths[0], str(metadata.get("description") or ""), str(metadata.get("emotion") or ""))


def pred_sticker(record: PredictionRecord, index: int) -> StickerImage | None:
    """The predicted sticker (``pred_image`` with ``pred_image_metadata``), or None."""
    return _sticker(record, index, "pred_image", "pred_image_metadata")


def gold_sticker(record: PredictionRecord, index: int) -> StickerImage | None:
    """The gold system sticker (``response_image`` with ``response_image_metadata``), or None."""
    return _sticker(record, index, "response_image", "response_image_metadata")


def gold_text(record: PredictionRecord, index: int) -> str:
    value = prediction_fields(record).get("response_text")
    if not isinstance(value, str):
        raise SampleRecordError(index, "response_text", "missing or not a string")
    return value


# ---------------------------------------------------------------------------------------- terms
@dataclass(frozen=True)
class MultimodalTerms:
    """The per-sample similarities behind every metric, each ``(N,)``; a term whose sticker is
    missing is 0 (a missing sticker is encoded as the zero vector)."""

    tt: np.ndarray  # sim(t̂, t)
    vv: np.ndarray  # sim(v̂, v)
    pred_text_gold_image: np.ndarray  # sim(t̂, v)
    pred_image_gold_text: np.ndarray  # sim(v̂, t)
    clip: np.ndarray  # sim(v̂, t̂)
    clip_gt: np.ndarray  # sim(v, t)
    has_pred: np.ndarray  # bool: the prediction has a sticker
    has_gold: np.ndarray  # bool: the gold reply has a sticker


def _image_vectors(
    encoder: ImageTextEncoder,
    stickers: Sequence[StickerImage | None],
    cache: dict[StickerImage, np.ndarray],
    dim: int,
) -> np.ndarray:
    """``(N, D)`` image vectors, zero rows where there is no sticker; each distinct image encoded once."""
    new = list(dict.fromkeys(s for s in stickers if s is not None and s not in cache))
    if new:
        cache.update(zip(new, encoder.encode_images(new), strict=True))
    out = np.zeros((len(stickers), dim), dtype=np.float32)
    for row, sticker in enumerate(stickers):
        if sticker is not None:
            out[row] = cache[sticker]
    return out


def compute_terms(records: Records, encoder: ImageTextEncoder) -> MultimodalTerms:
    """Encode every sample's texts and stickers once and take the §6.6 similarities."""
    if not records:
        raise ValueError("nothing to score: no samples")
    hyp_texts = [clean(pred_text(r, i)) for i, r in enumerate(records)]
    ref_texts = [clean(gold_text(r, i)) for i, r in enumerate(records)]
    hyp_stickers = [pred_sticker(r, i) for i, r in enumerate(records)]
    ref_stickers = [gold_sticker(r, i) for i, r in enumerate(records)]
    unique = list(dict.fromkeys(hyp_texts + ref_texts))
    by_text = dict(zip(unique, encoder.encode_texts(unique), strict=True))
    hyp_t = np.stack([by_text[t] for t in hyp_texts])  # (N, D)
    ref_t = np.stack([by_text[t] for t in ref_texts])  # (N, D)
    cache: dict[StickerImage, np.ndarray] = {}
    hyp_v = _image_vectors(encoder, hyp_stickers, cache, hyp_t.shape[1])  # (N, D)
    ref_v = _image_vectors(encoder, ref_stickers, cache, hyp_t.shape[1])  # (N, D)

    def sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return SIM_SCALE * np.einsum("nd,nd->n", a, b).astype(np.float64)  # (N,)

    return MultimodalTerms(
        tt=sim(hyp_t, ref_t),
        vv=sim(hyp_v, ref_v),
        pred_text_gold_image=sim(hyp_t, ref_v),
        pred_image_gold_text=sim(hyp_v, ref_t),
        clip=sim(hyp_v, hyp_t),
        clip_gt=sim(ref_v, ref_t),
        has_pred=np.array([s is not None for s in hyp_stickers]),
        has_gold=np.array([s is not None for s in ref_stickers]),
    )


def mm_relevance(terms: MultimodalTerms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample MM-Relevance P, R and F (each ``(N,)``), elements paired by modality."""
    total = terms.tt + terms.vv  # S
    hyp_size = 1.0 + terms.has_pred  # |H|
    ref_size = 1.0 + terms.has_gold  # |R|
    precision, recall = total / hyp_size, total / ref_size
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(total), where=denominator != 0)
    return precision, recall, f1


def optimised_mm_relevance(terms: MultimodalTerms) -> np.ndarray:
    """Per-sample ``(tt + vv + sim(t̂, v) + sim(v̂, t)) / k``, k = 4 / 2 / 1 for two / one / no stickers."""
    k = np.where(terms.has_pred & terms.has_gold, 4.0, np.where(terms.has_pred | terms.has_gold, 2.0, 1.0))
    return (terms.tt + terms.vv + terms.pred_text_gold_image + terms.pred_image_gold_text) / k


# ---------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MultimodalConfig:
    """Conventions that change the numbers; each shows in the signatures."""

    original_clip_filter: bool = False  # CLIP scores: also drop values <= 0, as the original script did


@dataclass(frozen=True)
class _Metric:
    name: str
    values: np.ndarray  # (N,) per-sample values
    mask: np.ndarray  # (N,) bool: the samples the mean runs over
    fields: dict[str, str]


def _results(metrics: Sequence[_Metric], resampler: Bootstrap, libraries: tuple[str, ...]) -> dict[str, MetricResult]:
    """Means over each metric's samples with bootstrap intervals that resample those samples.

    Metrics over all samples share one set of resamples (paired, as the text metrics); a CLIP score
    resamples the samples it averages over, so no resample is left without a sticker.
    """
    extra = bootstrap_fields(resampler.resamples, resampler.seed) | {"version": version_field(*libraries)}
    out = {}
    for m in metrics:
        scored = m.values[m.mask]  # (n_scored,)
        (interval,) = resampler.intervals(len(scored), [mean_statistic(scored)])
        out[m.name] = MetricResult(
            name=m.name,
            score=float(scored.mean()),
            n_items=len(scored),
            ci=interval,
            per_item=[float(v) if keep else None for v, keep in zip(m.values, m.mask, strict=True)],
            signature=m.fields | extra,
        )
    return out


def sticker_frequency(records: Records, bootstrap: int = 1000, seed: int = 0) -> dict[str, MetricResult]:
    """The share of samples whose predicted (``sticker_frequency``) and gold (``_gt``) reply has a sticker."""
    if not records:
        raise ValueError("nothing to score: no samples")
    pred = np.array([pred_sticker(r, i) is not None for i, r in enumerate(records)], dtype=np.float64)
    gold = np.array([gold_sticker(r, i) is not None for i, r in enumerate(records)], dtype=np.float64)
    every = np.ones(len(records), dtype=bool)
    fields = {"of": "samples", "stat": "share-with-sticker", "samples": str(len(records))}
    metrics = [
        _Metric("sticker_frequency", pred, every, fields | {"side": "pred"}),
        _Metric("sticker_frequency_gt", gold, every, fields | {"side": "gold"}),
    ]
    return _results(metrics, Bootstrap(bootstrap, seed), ())


# ---------------------------------------------------------------------------------------- sticker fit
# The user's state -> the reply sticker labels that answer it well. A state is the label of the user's
# current sticker when it has one, else the polarity of the user's message. Reasons, row by row:
# * Sadness, Fear: comfort and reassurance, i.e. warmth (hugs, hearts, gentle smiles are SER30K Happiness)
#   or a calm presence (Neutral); a crying or frightened sticker echoes the pain instead of easing it.
# * Anger, Disgust: de-escalation, a calm Neutral sticker; a cheerful one reads as dismissive, an angry one
#   escalates.
# * a negative message: it does not say which negative emotion, so comfort (Happiness, Neutral), the reading
#   that suits all four; it is also what the published data does (users send mostly negative stickers, the
#   system mostly Neutral and Happiness ones; method reference §4.1).
# * Happiness, a positive message: share the joy (Happiness) or the amazement (Surprise); a flat Neutral
#   sticker falls short of it.
# * Surprise, Neutral, a neutral message: the valence is unknown, so any non-negative sticker.
# A negative reply sticker (Anger, Disgust, Fear, Sadness) never fits.
_COMFORT = frozenset({"Happiness", "Neutral"})
_CALM = frozenset({"Neutral"})
_JOY = frozenset({"Happiness", "Surprise"})
_NON_NEGATIVE = frozenset({"Happiness", "Neutral", "Surprise"})
STICKER_FIT: dict[str, frozenset[str]] = {
    "Sadness": _COMFORT,
    "Fear": _COMFORT,
    "Anger": _CALM,
    "Disgust": _CALM,
    "negative message": _COMFORT,
    "Happiness": _JOY,
    "positive message": _JOY,
    "Surprise": _NON_NEGATIVE,
    "Neutral": _NON_NEGATIVE,
    "neutral message": _NON_NEGATIVE,
}
STICKER_FIT_NAME = "comfort-v1"  # change it with the table; the signature also carries the table's digest
MESSAGE_POLARITY = 0.3  # |VADER compound| from which a message counts as positive / negative (as data quality's)


def sticker_fit_table_id() -> str:
    """``comfort-v1:<digest>``: the table's name and a hash of its rows, so a changed table shows in signatures."""
    rows = json.dumps({state: sorted(labels) for state, labels in STICKER_FIT.items()}, sort_keys=True)
    return f"{STICKER_FIT_NAME}:{hashlib.sha256(rows.encode()).hexdigest()[:8]}"


def sticker_label(metadata: Any) -> str | None:
    """A sticker dict's emotion label (``origin_anno``, or ``label``) when it is one of the 7 classes."""
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get("origin_anno") or metadata.get("label")
    return value if value in EMOTION_LABELS else None


def user_state(record: PredictionRecord, index: int) -> str:
    """The user's state the reply answers: the label of the current user sticker (``input_image_metadata``),
    else the polarity of the user's message (``query``) by VADER: negative, positive or neutral message."""
    fields = prediction_fields(record)
    label = sticker_label(fields.get("input_image_metadata"))
    if label is not None:
        return label
    query = fields.get("query")
    if not isinstance(query, str):
        raise SampleRecordError(index, "query", "missing or not a string; the user's message tells its state")
    return f"{message_polarity(query, MESSAGE_POLARITY)} message"


def sticker_fit(records: Records, bootstrap: int = 1000, seed: int = 0) -> dict[str, MetricResult]:
    """``sticker_fit``: the share of predicted stickers whose label fits the user's state (``STICKER_FIT``);
    ``sticker_fit_gt``: the same for the gold stickers, the reference a system is read against.

    Only samples with a labelled sticker on that side are scored (``n_items``); a sticker without a label
    is counted in the signature's ``unlabelled``. A side with no labelled sticker (a text-only system) has
    no result. The label says nothing about which sticker of a label was chosen: read the fit beside
    MM-Relevance and the retrieval metrics.
    """
    if not records:
        raise ValueError("nothing to score: no samples")
    states: dict[int, str] = {}  # read only where a sticker is scored: a text-only sample needs no message

    def fits(label: str | None, index: int) -> bool:
        if label is None:
            return False
        if index not in states:
            states[index] = user_state(records[index], index)
        return label in STICKER_FIT[states[index]]

    base = {
        "of": "labelled-stickers",
        "state": f"user-sticker-label,else-vader-query:{MESSAGE_POLARITY}",
        "table": sticker_fit_table_id(),
        "samples": str(len(records)),
    }
    metrics = []
    for name, side, sticker_of, metadata_key in (
        ("sticker_fit", "pred", pred_sticker, "pred_image_metadata"),
        ("sticker_fit_gt", "gold", gold_sticker, "response_image_metadata"),
    ):
        has = np.array([sticker_of(r, i) is not None for i, r in enumerate(records)])
        labels = [
            sticker_label(prediction_fields(r).get(metadata_key)) if sent else None
            for r, sent in zip(records, has, strict=True)
        ]
        mask = np.array([label is not None for label in labels])
        if not mask.any():
            log.info("%s left out: no sample has a labelled %s sticker", name, side)
            continue
        values = np.array([fits(label, i) for i, label in enumerate(labels)], dtype=np.float64)
        unlabelled = int(has.sum() - mask.sum())
        metrics.append(_Metric(name, values, mask, base | {"side": side, "unlabelled": str(unlabelled)}))
    return _results(metrics, Bootstrap(bootstrap, seed), ("vaderSentiment",))


def score_multimodal(
    records: Records,
    encoder: ImageTextEncoder,
    bootstrap: int = 1000,
    seed: int = 0,
    config: MultimodalConfig | None = None,
) -> dict[str, MetricResult]:
    """Every §6.6 metric of the samples' predictions, plus the sticker frequencies.

    Names carry ``_proxy`` when ``encoder`` is a proxy. ``clip_score`` / ``clip_score_gt`` are left
    out when no sample has a predicted / gold sticker. ``bootstrap`` resamples (0: no intervals)
    with ``seed`` give the 95% intervals.
    """
    config = config or MultimodalConfig()
    terms = compute_terms(records, encoder)
    n = len(records)
    every = np.ones(n, dtype=bool)
    suffix = PROXY_SUFFIX if encoder.proxy else ""
    base = encoder.signature_fields() | {"sim": "100cos", "clip": "none", "text": "img-stripped", "samples": str(n)}
    precision, recall, f1 = mm_relevance(terms)
    pair = {"pair": "by-modality", "stat": "mean"}
    metrics = [
        _Metric("mm_relevance_p", precision, every, base | pair),
        _Metric("mm_relevance_r", recall, every, base | pair),
        _Metric("mm_relevance_f", f1, every, base | pair | {"alias": "f-MMr"}),
        _Metric("mm_relevance_opt", optimised_mm_relevance(terms), every, base | {"pair": "all", "stat": "mean"}),
    ]
    kept = "has-sticker,>0" if config.original_clip_filter else "has-sticker"
    for name, values, has, side in (
        ("clip_score", terms.clip, terms.has_pred, "pred"),
        ("clip_score_gt", terms.clip_gt, terms.has_gold, "gold"),
    ):
        mask = has & (values > 0) if config.original_clip_filter else has
        if not mask.any():
            log.info("%s left out: no sample has a %s sticker to score", name + suffix, side)
            continue
        metrics.append(_Metric(name, values, mask, base | {"pair": f"{side}-image-text", "stat": "mean", "of": kept}))
    metrics = [_Metric(m.name + suffix, m.values, m.mask, m.fields) for m in metrics]
    scores = _results(metrics, Bootstrap(bootstrap, seed), encoder.libraries)
    return scores | sticker_frequency(records, bootstrap, seed)
