"""The shared bootstrap: resamples are multinomial draws, reproducible, and intervals behave for a mean."""

from __future__ import annotations

import numpy as np
import pytest

from stickerconv.evaluate.bootstrap import Bootstrap, mean_statistic, point, ratio_statistic


def test_resamples_draw_n_items_each_and_repeat_with_the_seed() -> None:
    chunks = list(Bootstrap(250, seed=3).weights(40))
    assert [c.shape for c in chunks] == [(100, 40), (100, 40), (50, 40)]
    assert all((c.sum(axis=1) == 40).all() for c in chunks)
    again = np.vstack(list(Bootstrap(250, seed=3).weights(40)))
    assert np.array_equal(np.vstack(chunks), again)
    assert not np.array_equal(np.vstack(list(Bootstrap(250, seed=4).weights(40))), again)


def test_mean_interval_is_close_to_the_normal_theory_one() -> None:
    values = np.random.default_rng(0).normal(10, 2, size=2000)
    statistic = mean_statistic(values)
    assert point(statistic, len(values)) == pytest.approx(values.mean())
    ((low, high),) = Bootstrap(2000, 0).intervals(len(values), [statistic])
    half = 1.96 * values.std() / np.sqrt(len(values))
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_ratio_with_zero_denominator_is_zero() -> None:
    statistic = ratio_statistic(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert point(statistic, 2) == 0.0


def test_no_resamples_no_intervals_and_negative_is_an_error() -> None:
    assert Bootstrap(0).intervals(10, [mean_statistic(np.ones(10))]) == [None]
    with pytest.raises(ValueError, match="resamples must be >= 0"):
        Bootstrap(-1)
