"""Bootstrap confidence intervals over resampled items, shared by the corpus metrics.

A metric is written as a *statistic of item weights*: a function from a ``(rows, n_items)`` matrix
of how often each item is drawn to one value per row. The full-sample score is that statistic at
weight 1 for every item, and a bootstrap resample is a row of multinomial counts, so corpus BLEU
(sums of clipped n-gram counts) and means of per-sample scores resample the same way. All metrics
of one call see the same resamples (a paired bootstrap) from one seeded generator, so intervals
are reproducible. The interval is the percentile one (2.5th and 97.5th). Corpus Distinct-n is the
exception: resampling with replacement biases it, so it brings a jackknife interval of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]  # (rows, n_items) weights -> (rows,) values
CHUNK = 100  # resamples per weight matrix: bounds memory at 100 x n_items float64


@dataclass(frozen=True)
class Bootstrap:
    """Resampling settings: ``resamples`` 0 means no intervals."""

    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise ValueError(f"bootstrap resamples must be >= 0, got {self.resamples}")

    def weights(self, n_items: int) -> Iterator[np.ndarray]:
        """The resamples as chunks of ``(rows, n_items)`` draw counts, the same for the same seed."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.resamples, CHUNK):
            rows = min(CHUNK, self.resamples - start)
            draws = rng.integers(0, n_items, size=(rows, n_items))
            flat = (draws + np.arange(rows)[:, None] * n_items).ravel()
            yield np.bincount(flat, minlength=rows * n_items).reshape(rows, n_items).astype(np.float64)

    def intervals(self, n_items: int, statistics: Sequence[Statistic]) -> list[tuple[float, float] | None]:
        """The 2.5 and 97.5 percentiles of each statistic over the resamples (None without resamples)."""
        if not self.resamples or n_items == 0:
            return [None] * len(statistics)
        values: list[list[np.ndarray]] = [[] for _ in statistics]
        for chunk in self.weights(n_items):
            for out, statistic in zip(values, statistics, strict=True):
                out.append(statistic(chunk))
        bounds = [np.percentile(np.concatenate(v), [2.5, 97.5]) for v in values]
        return [(float(low), float(high)) for low, high in bounds]


def point(statistic: Statistic, n_items: int) -> float:
    """The statistic on the sample itself: every item drawn once."""
    return float(statistic(np.ones((1, n_items)))[0])


def mean_statistic(per_item: np.ndarray) -> Statistic:
    """The weighted mean of per-sample scores."""
    values = np.asarray(per_item, dtype=np.float64)
    return lambda weights: (weights @ values) / weights.sum(axis=1)


def ratio_statistic(numerators: np.ndarray, denominators: np.ndarray) -> Statistic:
    """``sum(w * num) / sum(w * den)``, 0 where the denominator is 0."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)

    def statistic(weights: np.ndarray) -> np.ndarray:
        top, bottom = weights @ num, weights @ den
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    return statistic


@dataclass(frozen=True)
class Estimate:
    """A metric's score before its interval: how to resample it, or an interval of its own."""

    name: str
    score: float
    fields: dict[str, str]  # signature fields; the interval and version fields are added last
    libraries: tuple[str, ...]  # distributions named in the version field
    statistic: Statistic | None = None  # resampled for the bootstrap interval
    interval: tuple[float, float] | None = None  # an interval computed otherwise (e.g. jackknife)
    interval_method: str = ""  # its signature name
    per_item: np.ndarray | None = None  # per-sample scores, for metrics that are their mean

    @classmethod
    def resampled(cls, name: str, statistic: Statistic, n_items: int, fields: dict[str, str], libraries=(), **kw):
        """An estimate whose score is ``statistic`` on the sample and whose interval is the bootstrap's."""
        return cls(name, point(statistic, n_items), fields, tuple(libraries), statistic=statistic, **kw)
