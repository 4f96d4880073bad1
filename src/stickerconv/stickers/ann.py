"""Nearest-neighbour search over L2-normalised vectors: exact for small sets, FAISS IVF for large.

Both answer the same call, ``search(queries, k, rows)``, with inner-product (= cosine) scores, so
the sticker index never cares which one it holds. The IVF index calibrates its ``nprobe`` at build
time against exact search, so its recall is measured rather than hoped for.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 100_000  # up to this many vectors, exact search is both fast and perfect
TARGET_RECALL = 0.97  # recall@10 the IVF calibration aims for


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of ``scores`` (Q, N), best first: (Q, k) scores and positions."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), np.float32), np.empty((scores.shape[0], 0), np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k), unordered
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part_scores, order, axis=1), np.take_along_axis(part, order, axis=1)


SMALL_PRODUCT = 4_000_000  # Q x N below which one thread beats waking the BLAS thread pool


def _scores(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Inner products (Q, N). A single query against a small library takes ~0.1 ms on one thread,
    but several ms through BLAS when its threads must first be woken (and fight the embedder's)."""
    if queries.shape[0] * vectors.shape[0] <= SMALL_PRODUCT:
        return np.einsum("qd,nd->qn", queries, vectors)
    return queries @ vectors.T


class ExactIndex:
    kind = "exact"

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors  # (N, d) float32, normalised

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and row numbers; ``rows`` restricts the search to those rows."""
        if rows is None:
            return _top_k(_scores(queries, self.vectors), k)  # (Q, N)
        scores, pos = _top_k(_scores(queries, self.vectors[rows]), k)  # (Q, |rows|)
        return scores, rows[pos]

    def params(self) -> dict:
        return {}

    def save(self, folder: Path) -> None:
        """Nothing beyond the vectors, which the caller saves."""


class IvfIndex:
    """FAISS IndexIVFFlat over inner product, with ``nprobe`` calibrated against exact search."""

    kind = "ivf"

    def __init__(self, vectors: np.ndarray, index, nprobe: int):
        self.vectors, self.index, self.nprobe = vectors, index, nprobe

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @classmethod
    def build(
        cls, vectors: np.ndarray, nlist: int | None = None, seed: int = 0, target_recall: float = TARGET_RECALL
    ) -> IvfIndex:
        import faiss

        n, d = vectors.shape
        nlist = nlist or int(min(65536, max(16, 4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train_n = min(n, 64 * nlist)
        train = vectors[np.sort(rng.choice(n, train_n, replace=False))] if train_n < n else vectors
        index.cp.seed = seed
        index.train(np.ascontiguousarray(train))
        index.add(np.ascontiguousarray(vectors))
        ivf = cls(vectors, index, nprobe=1)
        ivf.nprobe = ivf._calibrate(rng, target_recall)
        return ivf

    def _calibrate(self, rng: np.random.Generator, target: float, n_queries: int = 200, k: int = 10) -> int:
        """Smallest power-of-two nprobe whose recall@k on held-in sample queries reaches ``target``.

        Each sample query is a stored vector; its own row is left out of both answer lists, so the
        trivial self-match does not inflate the recall.
        """
        n = len(self)
        queries_rows = rng.choice(n, min(n_queries, n), replace=False)
        queries = self.vectors[queries_rows]
        exact = ExactIndex(self.vectors)
        truth = []
        for start in range(0, len(queries), 16):  # 16 queries at a time: 16 x N scores, not 200 x N
            _, rows = exact.search(queries[start : start + 16], k + 1)
            truth += [
                set(r) - {q} for r, q in zip(rows.tolist(), queries_rows[start : start + 16].tolist(), strict=True)
            ]
        nprobe = 1
        while True:
            self.nprobe = nprobe
            _, found = self.search(queries, k + 1)
            pairs = zip(truth, found.tolist(), queries_rows.tolist(), strict=True)
            hits = sum(len(t & (set(f) - {q})) for t, f, q in pairs)
            recall = hits / max(1, sum(len(t) for t in truth))
            log.info("IVF calibration: nprobe=%d recall@%d=%.3f", nprobe, k, recall)
            if recall >= target or nprobe >= self.index.nlist:
                return nprobe
            nprobe = min(nprobe * 2, self.index.nlist)

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if rows is not None and len(rows) <= EXACT_LIMIT:
            return ExactIndex(self.vectors).search(queries, k, rows)  # small subsets: exact is cheaper
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if rows is not None:
            params.sel = faiss.IDSelectorBatch(rows.astype(np.int64))
        # FAISS pads a row with -1 when the probed lists hold fewer than k vectors.
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)

    def params(self) -> dict:
        return {"nlist": int(self.index.nlist), "nprobe": int(self.nprobe)}

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(folder / "ivf.faiss"))

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray, nprobe: int) -> IvfIndex:
        import faiss

        return cls(vectors, faiss.read_index(str(folder / "ivf.faiss")), nprobe)


def build_ann(vectors: np.ndarray, kind: str = "auto", **ivf_options) -> ExactIndex | IvfIndex:
    if kind not in ("auto", "exact", "ivf"):
        raise ValueError(f"unknown search kind {kind!r}; choose auto, exact or ivf")
    if kind == "exact" or (kind == "auto" and len(vectors) <= EXACT_LIMIT):
        return ExactIndex(vectors)
    return IvfIndex.build(vectors, **ivf_options)
