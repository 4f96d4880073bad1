"""Sticker retrieval protocols: how well a scorer ranks the gold system sticker of each sample.

A *scorer* maps ``(context text, candidate sticker ids)`` to one score per candidate, higher is
better; :class:`IndexScorer` is the one over a :class:`~stickerconv.stickers.index.StickerIndex`
(cosine between the embedded context and each candidate's indexed vector). Two optional scorer
attributes extend this:

* ``needs_sample = True``: the scorer is called as ``scorer(context, candidates, sample=record)``
  with the whole sample record (history text with its ``<IMG>`` markers, input image paths, ...),
  for models that read more than the cleaned text (PEGS,
  :class:`~stickerconv.evaluate.retrieval.pegs_scorer.PegsScorer`); scorers without it are called as before.
* ``signature_fields``: a ``dict[str, str]`` added to every result's signature, for the choices
  inside the scorer that change the numbers.

Each protocol ranks the gold sticker of every sample that has one:

* **1 + n negatives** (``1+9``: R10@1/2/5, MAP, MRR; ``1+999``: R1000@1/10/100, MAP, MRR). The
  negatives are drawn uniformly without replacement from the pool minus the gold sticker, by a
  generator seeded with ``(neg_seed, sample index)``, so a sample gets the same negatives in any
  subset (the unseen split) and run; a digest of all drawn negatives is in the signature. With one
  relevant candidate, MAP equals MRR; both are reported because the literature reports both.
* **Full pool**: rank among every pool sticker; R@k, nDCG@k (one relevant item: ``1/log2(1+rank)``
  within k) and MRR.
* **Unseen split**: the same metrics on test samples whose gold sticker never appears in the
  training samples (as any input or response sticker) and on those whose sticker does.
* **When to send**: precision, recall and F1 of the decision to send a sticker at all.

**Ties** (``ties``): ``pessimistic`` (default) ranks the gold sticker below every candidate with
the same score, so a constant scorer gets the worst values; ``average`` reports the expected value
under a uniformly random order of the tied candidates. Sticker ids are the portable ids of the gold
image paths (:func:`~stickerconv.schema.sticker_id_from_path`), the ids libraries give their stickers.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stickerconv.evaluate.bootstrap import Bootstrap, mean_statistic, ratio_statistic
from stickerconv.evaluate.multimodal.scores import gold_sticker, pred_sticker, read_samples
from stickerconv.evaluate.signature import MetricResult, bootstrap_fields, version_field
from stickerconv.evaluate.text.tokens import clean
from stickerconv.schema import sticker_id_from_path
from stickerconv.stickers.index import StickerIndex

log = logging.getLogger(__name__)

Scorer = Callable[[str, Sequence[str]], np.ndarray]  # (context, candidate ids) -> (len(ids),) scores
Ties = Literal["pessimistic", "average"]
TIES: tuple[str, ...] = ("pessimistic", "average")
CONTEXT_FIELDS = ("input_text", "query", "response_text")
DEFAULT_KS: dict[int, tuple[int, ...]] = {9: (1, 2, 5), 999: (1, 10, 100)}
POOL_KS = (1, 5, 10)
CONTEXT_CACHE = 20_000  # context embeddings an IndexScorer keeps (about 30 MB at 384-d)
Records = Sequence[Mapping[str, Any]]


class RetrievalError(ValueError):
    """A protocol that cannot run on the given samples, pool or scorer, with what would work."""


class IndexScorer:
    """Cosine between the context, embedded with the index's embedder, and each candidate's vector."""

    def __init__(self, index: StickerIndex) -> None:
        self._index = index
        self._rows = {s.id: row for row, s in enumerate(index.stickers)}
        self._vectors = np.asarray(index.ann.vectors, dtype=np.float32)  # (N, d), L2-normalised
        self.name = f"index-cosine:{index.embedder.name}:{index.template}"
        # Each protocol embeds the same contexts again; remember the recent ones.
        self._embed = lru_cache(maxsize=CONTEXT_CACHE)(self._embed_context)

    @property
    def pool(self) -> list[str]:
        """Every indexed sticker id: the full pool of this scorer."""
        return list(self._rows)

    def __call__(self, context: str, candidates: Sequence[str]) -> np.ndarray:
        missing = [c for c in candidates if c not in self._rows]
        if missing:
            raise RetrievalError(f"sticker {missing[0]!r} is not in the index ({len(missing)} candidate(s) missing)")
        return self._vectors[[self._rows[c] for c in candidates]] @ self._embed(context)  # (C, d) @ (d,) -> (C,)

    def _embed_context(self, context: str) -> np.ndarray:
        return self._index.embedder.embed([context])[0]  # (d,)


def scorer_name(scorer: Scorer) -> str:
    return str(getattr(scorer, "name", getattr(scorer, "__name__", "custom")))


def _score_item(scorer: Scorer, item: RetrievalItem, candidates: Sequence[str]) -> np.ndarray:
    """The scorer's (len(candidates),) scores for one item: with the sample when it declares ``needs_sample``."""
    if getattr(scorer, "needs_sample", False):
        return np.asarray(scorer(item.context, candidates, sample=item.sample), dtype=np.float64)  # type: ignore[call-arg]
    return np.asarray(scorer(item.context, candidates), dtype=np.float64)


# ---------------------------------------------------------------------------------------- ranks
def rank_values(scores: np.ndarray, gold: int, ties: Ties, metric: Callable[[int], float]) -> float:
    """``metric(rank)`` of candidate ``gold`` under ``scores`` (rank 1 = best), ties resolved by ``ties``."""
    if ties not in TIES:
        raise RetrievalError(f"unknown tie rule {ties!r}; use one of {', '.join(TIES)}")
    scores = np.asarray(scores, dtype=np.float64)  # (C,)
    if np.isnan(scores).any():
        raise RetrievalError("the scorer returned NaN; scores must be comparable numbers")
    above = int((scores > scores[gold]).sum())
    tied = int((scores == scores[gold]).sum()) - 1  # other candidates with the gold's score
    if ties == "pessimistic":
        return metric(above + tied + 1)
    return float(np.mean([metric(rank) for rank in range(above + 1, above + tied + 2)]))


def recall_at(k: int) -> Callable[[int], float]:
    return lambda rank: float(rank <= k)


def ndcg_at(k: int) -> Callable[[int], float]:
    return lambda rank: 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def reciprocal_rank(rank: int) -> float:
    return 1.0 / rank


# ---------------------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class RetrievalItem:
    index: int  # position in the sample list it came from; seeds its negatives
    context: str
    gold: str  # sticker id
    sample: Mapping[str, Any] = field(compare=False, repr=False)  # the whole record, for needs_sample scorers


def retrieval_items(
    records: Records, context: str = "input_text", indices: Iterable[int] | None = None
) -> list[RetrievalItem]:
    """The samples with a gold system sticker, as (index, context text, gold id); others are skipped."""
    if context not in CONTEXT_FIELDS:
        raise RetrievalError(f"unknown context field {context!r}; use one of {', '.join(CONTEXT_FIELDS)}")
    items = []
    for i in range(len(records)) if indices is None else indices:
        record = records[i]
        gold = gold_sticker(record, i)
        if gold is None:
            continue
        text = record.get(context)
        if not isinstance(text, str) or not clean(text):
            raise RetrievalError(f"sample {i}: context field '{context}' is missing or empty")
        items.append(RetrievalItem(i, clean(text), sticker_id_from_path(gold.path), record))
    return items


def _check_pool(items: Sequence[RetrievalItem], pool: Sequence[str]) -> list[str]:
    ordered = sorted(set(pool))
    known = set(ordered)
    outside = [item for item in items if item.gold not in known]
    if outside:
        raise RetrievalError(
            f"{len(outside)} gold sticker(s) are not in the candidate pool of {len(ordered)} (e.g. "
            f"{outside[0].gold!r} of sample {outside[0].index}); the pool must hold the test stickers "
            "(index the test pool, method reference §9 item 9)"
        )
    return ordered


def sample_negatives(
    items: Sequence[RetrievalItem], pool: Sequence[str], n_negatives: int, seed: int
) -> list[list[str]]:
    """Each item's negatives: ``n_negatives`` pool ids other than its gold, seeded by ``(seed, item.index)``."""
    ordered = _check_pool(items, pool)
    if n_negatives > len(ordered) - 1:
        raise RetrievalError(
            f"1 + {n_negatives} candidates need a pool of at least {n_negatives + 1} stickers, "
            f"this pool has {len(ordered)}; use fewer negatives or a larger pool"
        )
    position = {sid: p for p, sid in enumerate(ordered)}
    out = []
    for item in items:
        rng = np.random.default_rng([seed, item.index])
        draws = rng.choice(len(ordered) - 1, size=n_negatives, replace=False)  # positions in the pool minus gold
        gold = position[item.gold]
        out.append([ordered[d + (d >= gold)] for d in draws.tolist()])
    return out


def negatives_digest(negatives: Sequence[Sequence[str]]) -> str:
    """A short hash of every sample's negatives, in order: equal digests mean equal candidate sets."""
    return hashlib.sha256("\n".join(",".join(n) for n in negatives).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- results
def _mean_results(
    per_metric: dict[str, np.ndarray], fields: dict[str, dict[str, str]], bootstrap: int, seed: int
) -> dict[str, MetricResult]:
    """Means of per-item values with paired bootstrap intervals (one set of resamples for all)."""
    names = list(per_metric)
    n = len(next(iter(per_metric.values())))
    resampler = Bootstrap(bootstrap, seed)
    intervals = resampler.intervals(n, [mean_statistic(per_metric[name]) for name in names])
    extra = bootstrap_fields(bootstrap, seed) | {"version": version_field()}
    return {
        name: MetricResult(
            name=name,
            score=float(per_metric[name].mean()),
            n_items=n,
            ci=interval,
            per_item=per_metric[name].tolist(),
            signature=fields[name] | extra,
        )
        for name, interval in zip(names, intervals, strict=True)
    }


@dataclass(frozen=True)
class RetrievalConfig:
    """Choices that change the numbers; each shows in the signatures."""

    context: str = "input_text"  # the sample field the scorer sees (<IMG> removed): one of CONTEXT_FIELDS
    ties: Ties = "pessimistic"
    neg_seed: int = 0  # seeds the sampled negatives, independently of the bootstrap seed


def _base_fields(scorer: Scorer, config: RetrievalConfig, pool: int) -> dict[str, str]:
    fields = {"scorer": scorer_name(scorer), "context": config.context, "ties": config.ties, "pool": str(pool)}
    return fields | {str(k): str(v) for k, v in getattr(scorer, "signature_fields", {}).items()}


def candidate_ranking(
    records: Records,
    scorer: Scorer,
    pool: Sequence[str],
    n_negatives: int = 9,
    ks: Sequence[int] | None = None,
    config: RetrievalConfig | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    indices: Iterable[int] | None = None,
) -> dict[str, MetricResult]:
    """The 1 + ``n_negatives`` protocol: ``r{n+1}@k`` for each k, ``r{n+1}_map`` and ``r{n+1}_mrr``.

    ``indices`` restricts it to those samples (each keeps the negatives its index seeds).
    """
    config = config or RetrievalConfig()
    ks = tuple(ks or DEFAULT_KS.get(n_negatives, [k for k in (1, 2, 5) if k <= n_negatives + 1]))
    if n_negatives < 1 or any(k < 1 or k > n_negatives + 1 for k in ks):
        raise RetrievalError(f"1 + {n_negatives} candidates: need n_negatives >= 1 and every k in 1..{n_negatives + 1}")
    items = _non_empty(retrieval_items(records, config.context, indices))
    negatives = sample_negatives(items, pool, n_negatives, config.neg_seed)
    values: dict[str, list[float]] = {}
    size = n_negatives + 1
    for item, negs in zip(items, negatives, strict=True):
        rng = np.random.default_rng([config.neg_seed, item.index, 1])
        candidates = [item.gold, *negs]
        order = rng.permutation(size)  # the scorer never learns the gold's place from the order
        shuffled = [candidates[o] for o in order]
        scores = _score_item(scorer, item, shuffled)  # (size,)
        _check_scores(scores, size)
        gold = int(np.flatnonzero(order == 0)[0])
        for k in ks:
            values.setdefault(f"r{size}@{k}", []).append(rank_values(scores, gold, config.ties, recall_at(k)))
        rr = rank_values(scores, gold, config.ties, reciprocal_rank)
        values.setdefault(f"r{size}_map", []).append(rr)  # one relevant candidate: AP = RR
        values.setdefault(f"r{size}_mrr", []).append(rr)
    base = _base_fields(scorer, config, len(set(pool))) | {
        "protocol": f"1+{n_negatives}",
        "negatives": str(n_negatives),
        "neg_seed": str(config.neg_seed),
        "neg_digest": negatives_digest(negatives),
    }
    fields = {name: base | {"k": name.partition("@")[2] or "all"} for name in values}
    return _mean_results({name: np.array(v) for name, v in values.items()}, fields, bootstrap, seed)


def full_pool_ranking(
    records: Records,
    scorer: Scorer,
    pool: Sequence[str],
    ks: Sequence[int] = POOL_KS,
    config: RetrievalConfig | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    indices: Iterable[int] | None = None,
) -> dict[str, MetricResult]:
    """Rank among the whole pool: ``pool_r@k``, ``pool_ndcg@k`` for each k, and ``pool_mrr``."""
    config = config or RetrievalConfig()
    items = _non_empty(retrieval_items(records, config.context, indices))
    ordered = _check_pool(items, pool)
    position = {sid: p for p, sid in enumerate(ordered)}
    values: dict[str, list[float]] = {}
    for item in items:
        scores = _score_item(scorer, item, ordered)  # (P,)
        _check_scores(scores, len(ordered))
        gold = position[item.gold]
        for k in ks:
            values.setdefault(f"pool_r@{k}", []).append(rank_values(scores, gold, config.ties, recall_at(k)))
        for k in ks:
            values.setdefault(f"pool_ndcg@{k}", []).append(rank_values(scores, gold, config.ties, ndcg_at(k)))
        values.setdefault("pool_mrr", []).append(rank_values(scores, gold, config.ties, reciprocal_rank))
    base = _base_fields(scorer, config, len(ordered)) | {"protocol": "full-pool"}
    fields = {name: base | {"k": name.partition("@")[2] or "all"} for name in values}
    return _mean_results({name: np.array(v) for name, v in values.items()}, fields, bootstrap, seed)


def _non_empty(items: list[RetrievalItem]) -> list[RetrievalItem]:
    if not items:
        raise RetrievalError("no sample has a gold system sticker (response_image): nothing to rank")
    return items


def _check_scores(scores: np.ndarray, expected: int) -> None:
    if scores.shape != (expected,):
        raise RetrievalError(f"the scorer returned scores of shape {scores.shape} for {expected} candidates")


def score_retrieval(
    records: Records,
    scorer: Scorer,
    pool: Sequence[str],
    config: RetrievalConfig | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    indices: Iterable[int] | None = None,
) -> dict[str, MetricResult]:
    """1+9 and full-pool metrics, and 1+999 when the pool has at least 1,000 stickers."""
    indices = None if indices is None else list(indices)
    out = candidate_ranking(records, scorer, pool, 9, None, config, bootstrap, seed, indices)
    if len(set(pool)) >= 1000:
        out |= candidate_ranking(records, scorer, pool, 999, None, config, bootstrap, seed, indices)
    else:
        log.info("1+999 left out: the pool has %d stickers, it needs 1,000", len(set(pool)))
    return out | full_pool_ranking(records, scorer, pool, POOL_KS, config, bootstrap, seed, indices)


# ---------------------------------------------------------------------------------------- unseen split
def _load(samples: Records | Path | str) -> Records:
    return read_samples(samples) if isinstance(samples, Path | str) else samples


def seen_sticker_ids(train: Records) -> set[str]:
    """Every sticker id the training samples show, as an input sticker or as a response sticker."""
    paths = (p for r in train for key in ("input_image", "response_image") for p in (r.get(key) or []))
    return {sticker_id_from_path(p) for p in paths}


@dataclass(frozen=True)
class SeenSplit:
    seen: list[int]  # test sample indices whose gold sticker appears in training
    unseen: list[int]  # ... whose gold sticker never does
    no_sticker: int  # test samples without a gold sticker (not ranked)
    train_stickers: int


def split_seen(train: Records | Path | str, test: Records | Path | str) -> SeenSplit:
    """Test samples with a gold sticker, split by whether that sticker occurs in the training samples."""
    train, test = _load(train), _load(test)
    seen_ids = seen_sticker_ids(train)
    seen, unseen, none = [], [], 0
    for i, record in enumerate(test):
        gold = gold_sticker(record, i)
        if gold is None:
            none += 1
        else:
            (seen if sticker_id_from_path(gold.path) in seen_ids else unseen).append(i)
    return SeenSplit(seen, unseen, none, len(seen_ids))


def score_unseen_split(
    train: Records | Path | str,
    test: Records | Path | str,
    scorer: Scorer,
    pool: Sequence[str],
    config: RetrievalConfig | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """:func:`score_retrieval` on the test samples of seen and of unseen gold stickers, named
    ``seen/…`` and ``unseen/…``, plus ``unseen_share`` (of the test samples with a sticker)."""
    test = _load(test)
    split = split_seen(train, test)
    out: dict[str, MetricResult] = {}
    for part, indices in (("seen", split.seen), ("unseen", split.unseen)):
        if not indices:
            log.info("no test sample has a %s gold sticker; %s/ metrics left out", part, part)
            continue
        for name, result in score_retrieval(test, scorer, pool, config, bootstrap, seed, indices).items():
            fields = result.signature | {"split": part, "train_stickers": str(split.train_stickers)}
            out[f"{part}/{name}"] = result.model_copy(update={"name": f"{part}/{name}", "signature": fields})
    flags = np.array([0.0] * len(split.seen) + [1.0] * len(split.unseen))
    if len(flags):
        fields = {"of": "test-samples-with-sticker", "train_stickers": str(split.train_stickers)}
        out |= _mean_results({"unseen_share": flags}, {"unseen_share": fields}, bootstrap, seed)
    return out


def score_retrieval_groups(
    records: Records,
    scorer: Scorer,
    pool: Sequence[str],
    config: RetrievalConfig | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    train: Records | Path | str | None = None,
) -> dict[str, dict[str, MetricResult]]:
    """:func:`score_retrieval` on every sample as group ``all``; with ``train`` also the groups ``seen`` and
    ``unseen`` of :func:`score_unseen_split` (a group without a sample is left out), its ``unseen_share``
    under ``all``. Metric names inside a group carry no prefix (``seen`` holds ``r10@1``, whose result is
    named ``seen/r10@1``): the shape of ``eval retrieval --out`` files, which tables read side by side."""
    groups = {"all": score_retrieval(records, scorer, pool, config, bootstrap, seed)}
    if train is not None:
        for name, result in score_unseen_split(train, records, scorer, pool, config, bootstrap, seed).items():
            group, _, metric = name.rpartition("/")
            groups.setdefault(group or "all", {})[metric] = result
    return groups


# ---------------------------------------------------------------------------------------- when to send
def send_decisions(records: Records, bootstrap: int = 1000, seed: int = 0) -> dict[str, MetricResult]:
    """``send_precision``, ``send_recall`` and ``send_f1`` of predicted sends against gold sends.

    A send is a reply with a sticker (``pred_image`` vs ``response_image``). A ratio with nothing
    to divide (no predicted or no gold send) is 0, and its ``n_items`` shows the 0.
    """
    if not records:
        raise RetrievalError("nothing to score: no samples")
    pred = np.array([pred_sticker(r, i) is not None for i, r in enumerate(records)], dtype=np.float64)
    gold = np.array([gold_sticker(r, i) is not None for i, r in enumerate(records)], dtype=np.float64)
    hits = pred * gold  # (N,)
    parts = {
        "send_precision": (hits, pred),
        "send_recall": (hits, gold),
        "send_f1": (2 * hits, pred + gold),  # 2TP / (2TP + FP + FN)
    }
    resampler = Bootstrap(bootstrap, seed)
    intervals = resampler.intervals(len(records), [ratio_statistic(num, den) for num, den in parts.values()])
    base = {"decision": "reply-has-sticker", "samples": str(len(records)), "zero_division": "0"}
    extra = bootstrap_fields(bootstrap, seed) | {"version": version_field()}
    scored = {"send_precision": int(pred.sum()), "send_recall": int(gold.sum()), "send_f1": len(records)}
    out = {}
    for (name, (num, den)), interval in zip(parts.items(), intervals, strict=True):
        total = den.sum()
        out[name] = MetricResult(
            name=name,
            score=float(num.sum() / total) if total else 0.0,
            n_items=scored[name],
            ci=interval,
            signature=base | extra,
        )
    return out
