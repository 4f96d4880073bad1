"""Sticker retrieval protocols: hand-made scorers give the best, worst and tied values, negatives
are reproducible by seed, the unseen split counts right, when-to-send P/R/F1 by hand, and a real
index scorer beats chance on the small emoji pack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stickerconv.evaluate.retrieval.protocols import (
    IndexScorer,
    RetrievalConfig,
    RetrievalError,
    candidate_ranking,
    full_pool_ranking,
    negatives_digest,
    rank_values,
    recall_at,
    reciprocal_rank,
    retrieval_items,
    sample_negatives,
    score_retrieval,
    score_unseen_split,
    send_decisions,
    split_seen,
)

POOL = [f"lib/s{j:02d}" for j in range(20)]


def record(i: int | None, context: str | None = None, pred: bool = False) -> dict:
    """A sample whose gold sticker is ``lib/s{i}`` (none when i is None), with context ``ctx-{i}``."""
    return {
        "input_text": context or f"USER: ctx-{i}<IMG>\nASSISTANT:",
        "query": f"ctx-{i}",
        "response_text": "ok" + ("<IMG>" if i is not None else ""),
        "response_image": [f"stickers/lib/s{i:02d}.png"] if i is not None else [],
        "pred_text_response": "ok",
        "pred_image": ["stickers/lib/s00.png"] if pred else [],
    }


RECORDS = [record(i) for i in range(8)] + [record(None)]


def gold_of(context: str) -> str:
    return f"lib/s{int(context.split('ctx-')[1][:1]):02d}"


def perfect(context, candidates):
    return np.array([1.0 if c == gold_of(context) else 0.0 for c in candidates])


def reversed_scorer(context, candidates):
    return np.array([-1.0 if c == gold_of(context) else float(i) for i, c in enumerate(candidates)])


def constant(context, candidates):
    return np.zeros(len(candidates))


def test_rank_of_tied_gold_is_pessimistic_or_averaged() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1])  # gold 0: one candidate above, one tied
    assert rank_values(scores, 0, "pessimistic", reciprocal_rank) == pytest.approx(1 / 3)
    assert rank_values(scores, 0, "average", reciprocal_rank) == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert rank_values(scores, 0, "pessimistic", recall_at(2)) == 0.0
    assert rank_values(scores, 0, "average", recall_at(2)) == pytest.approx(0.5)
    assert rank_values(scores, 1, "pessimistic", reciprocal_rank) == 1.0
    with pytest.raises(RetrievalError, match="unknown tie rule 'random'"):
        rank_values(scores, 0, "random", reciprocal_rank)  # type: ignore[arg-type]


def test_perfect_scorer_gets_ones() -> None:
    out = score_retrieval(RECORDS, perfect, POOL, bootstrap=0)
    expected = {"r10@1", "r10@2", "r10@5", "r10_map", "r10_mrr", "pool_r@1", "pool_r@5", "pool_r@10"}
    expected |= {"pool_ndcg@1", "pool_ndcg@5", "pool_ndcg@10", "pool_mrr"}
    assert set(out) == expected  # no 1+999 with a pool of 20
    for result in out.values():
        assert result.score == 1.0 and result.n_items == 8  # the sticker-less sample is not ranked


def test_reversed_scorer_gets_the_worst_values() -> None:
    out = candidate_ranking(RECORDS, reversed_scorer, POOL, bootstrap=0)
    assert [out[f"r10@{k}"].score for k in (1, 2, 5)] == [0.0, 0.0, 0.0]
    assert out["r10_mrr"].score == pytest.approx(0.1) and out["r10_map"].score == pytest.approx(0.1)
    pool = full_pool_ranking(RECORDS, reversed_scorer, POOL, bootstrap=0)
    assert pool["pool_r@10"].score == 0.0 and pool["pool_ndcg@10"].score == 0.0
    assert pool["pool_mrr"].score == pytest.approx(1 / 20)


def test_constant_scorer_ties_pessimistic_and_average() -> None:
    worst = candidate_ranking(RECORDS, constant, POOL, bootstrap=0)
    assert worst["r10@5"].score == 0.0 and worst["r10_mrr"].score == pytest.approx(0.1)
    assert worst["r10@1"].signature["ties"] == "pessimistic"
    average = candidate_ranking(RECORDS, constant, POOL, config=RetrievalConfig(ties="average"), bootstrap=0)
    assert average["r10@1"].score == pytest.approx(0.1)
    assert average["r10@2"].score == pytest.approx(0.2)
    assert average["r10@5"].score == pytest.approx(0.5)
    assert average["r10_mrr"].score == pytest.approx(sum(1 / r for r in range(1, 11)) / 10)
    pool = full_pool_ranking(RECORDS, constant, POOL, ks=(10,), config=RetrievalConfig(ties="average"), bootstrap=0)
    assert pool["pool_r@10"].score == pytest.approx(0.5)
    ndcg = sum(1 / np.log2(r + 1) for r in range(1, 11)) / 20
    assert pool["pool_ndcg@10"].score == pytest.approx(ndcg)


def test_signature_records_protocol_negatives_seed_pool_and_k() -> None:
    out = candidate_ranking(RECORDS, perfect, POOL, bootstrap=100, seed=1)
    sig = out["r10@2"].signature
    assert (sig["protocol"], sig["negatives"], sig["neg_seed"], sig["pool"], sig["k"]) == ("1+9", "9", "0", "20", "2")
    assert sig["scorer"] == "perfect" and sig["context"] == "input_text"
    assert (sig["bs"], sig["seed"]) == ("100", "1")
    assert out["r10_mrr"].signature["k"] == "all"
    assert full_pool_ranking(RECORDS, perfect, POOL, bootstrap=0)["pool_ndcg@5"].signature["protocol"] == "full-pool"


def test_negatives_are_reproducible_by_seed_and_differ_with_another() -> None:
    items = retrieval_items(RECORDS)
    first, again = sample_negatives(items, POOL, 9, seed=0), sample_negatives(items, list(reversed(POOL)), 9, seed=0)
    other = sample_negatives(items, POOL, 9, seed=1)
    assert first == again  # the pool's order does not matter
    assert first != other
    for item, negatives in zip(items, first, strict=True):
        assert len(set(negatives)) == 9 and item.gold not in negatives and set(negatives) <= set(POOL)
    digest = candidate_ranking(RECORDS, perfect, POOL, bootstrap=0)["r10@1"].signature["neg_digest"]
    assert digest == negatives_digest(first)
    other_run = candidate_ranking(RECORDS, perfect, POOL, config=RetrievalConfig(neg_seed=1), bootstrap=0)
    assert other_run["r10@1"].signature["neg_digest"] == negatives_digest(other) != digest
    subset = retrieval_items(RECORDS, indices=[3, 5])
    assert sample_negatives(subset, POOL, 9, seed=0) == [first[3], first[5]]  # seeded by sample index


def test_one_plus_999_needs_a_pool_of_1000() -> None:
    with pytest.raises(RetrievalError, match="need a pool of at least 1000 stickers, this pool has 20"):
        candidate_ranking(RECORDS, perfect, POOL, n_negatives=999)
    big = POOL + [f"lib/x{j}" for j in range(980)]
    out = score_retrieval(RECORDS, reversed_scorer, big, bootstrap=0)
    assert {"r1000@1", "r1000@10", "r1000@100", "r1000_mrr"} <= set(out)
    assert out["r1000_mrr"].score == pytest.approx(1 / 1000)
    assert out["r1000@10"].signature["pool"] == "1000"


def test_bad_inputs_say_what_would_work() -> None:
    with pytest.raises(RetrievalError, match="not in the candidate pool of 5 .*'lib/s05' of sample 5"):
        candidate_ranking(RECORDS, perfect, POOL[:5], n_negatives=3)
    with pytest.raises(RetrievalError, match="no sample has a gold system sticker"):
        candidate_ranking([record(None)], perfect, POOL)
    with pytest.raises(RetrievalError, match="scores of shape"):
        candidate_ranking(RECORDS, lambda context, candidates: np.zeros(3), POOL)
    with pytest.raises(RetrievalError, match="unknown context field 'history'"):
        retrieval_items(RECORDS, context="history")
    with pytest.raises(RetrievalError, match=r"every k in 1\.\.10"):
        candidate_ranking(RECORDS, perfect, POOL, ks=(20,))


def test_unseen_split_counts_and_reports_both_parts(tmp_path) -> None:
    train = [record(i) for i in range(5)] + [record(None) | {"input_image": ["stickers/lib/s05.png"]}]
    test = [record(0), record(5), record(7), record(None), record(8)]
    split = split_seen(train, test)
    assert (split.seen, split.unseen, split.no_sticker, split.train_stickers) == ([0, 1], [2, 4], 1, 6)
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in test))
    out = score_unseen_split(tmp_path / "train.json", tmp_path / "test.jsonl", perfect, POOL, bootstrap=0)
    assert out["seen/r10@1"].n_items == 2 and out["unseen/r10@1"].n_items == 2
    assert out["unseen/r10@1"].name == "unseen/r10@1"
    assert out["unseen/pool_mrr"].signature["split"] == "unseen"
    assert out["seen/r10@1"].signature["train_stickers"] == "6"
    assert out["unseen_share"].score == pytest.approx(0.5) and out["unseen_share"].n_items == 4
    full = candidate_ranking(test, perfect, POOL, bootstrap=0)
    assert out["unseen/r10@1"].signature["neg_digest"] != full["r10@1"].signature["neg_digest"]


def test_when_to_send_precision_recall_f1_by_hand() -> None:
    # (pred sends, gold sends): TP, FP, TP, FN, TN, FP -> TP 2, FP 2, FN 1
    pattern = [(True, 1), (True, None), (True, 2), (False, 3), (False, None), (True, None)]
    records = [record(gold, pred=pred) for pred, gold in pattern]
    out = send_decisions(records, bootstrap=200)
    assert out["send_precision"].score == pytest.approx(2 / 4) and out["send_precision"].n_items == 4
    assert out["send_recall"].score == pytest.approx(2 / 3) and out["send_recall"].n_items == 3
    assert out["send_f1"].score == pytest.approx(2 * 2 / (2 * 2 + 2 + 1)) and out["send_f1"].n_items == 6
    low, high = out["send_f1"].ci
    assert 0.0 <= low <= out["send_f1"].score <= high <= 1.0


def test_when_to_send_with_nothing_sent_is_zero() -> None:
    out = send_decisions([record(1), record(None)], bootstrap=0)
    assert out["send_precision"].score == 0.0 and out["send_precision"].n_items == 0
    assert out["send_recall"].score == 0.0 and out["send_f1"].score == 0.0
    assert out["send_precision"].signature["zero_division"] == "0"


def test_index_scorer_on_the_small_pack_beats_chance(small_index) -> None:
    """Contexts that are a sticker's own description: the index must find it among 10 far above 1/10."""
    scorer = IndexScorer(small_index)
    stickers = small_index.stickers[::5]
    records = [{"input_text": s.description, "response_text": "ok<IMG>", "response_image": [s.image]} for s in stickers]
    out = candidate_ranking(records, scorer, scorer.pool, bootstrap=0)
    assert out["r10@1"].n_items == len(stickers) >= 50
    assert out["r10@1"].score > 0.5
    assert out["r10_mrr"].score > out["r10@1"].score - 1e-9
    assert out["r10@1"].signature["scorer"] == f"index-cosine:{small_index.embedder.name}:{small_index.template}"
    pool = full_pool_ranking(records, scorer, scorer.pool, bootstrap=0)
    assert pool["pool_r@10"].score > 10 / len(scorer.pool) * 5
    with pytest.raises(RetrievalError, match="not in the index"):
        scorer("a happy face", ["noto/no-such-sticker"])
