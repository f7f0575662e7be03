"""Unbiased pass@k against brute-force enumeration; distinct answers; correlation."""

from __future__ import annotations

import itertools
import math

import pytest

from rlx.metrics import distinct_correct, pass_at_k, pearson


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 8, 4), (10, 1, 5), (6, 5, 3), (12, 2, 12)])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k))


def test_pass_at_1_is_the_success_rate():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


def test_pass_at_k_needs_k_samples():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 8)


def test_distinct_correct_counts_unique_correct_answers():
    assert distinct_correct(["a", "a", "b", "c"], [True, True, True, False], str.strip) == 2


def test_pearson():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    xs, ys = [0.1, -0.3, 0.7, 0.2, -0.5], [1.0, 0.2, 0.9, 0.4, 0.1]
    mx, my = sum(xs) / 5, sum(ys) / 5
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    assert pearson(xs, ys) == pytest.approx(sxy / math.sqrt(sxx * syy), rel=1e-12)
    assert pearson(xs, ys) == pytest.approx(pearson(ys, xs), rel=1e-12)
    assert pearson(xs, [2 * y + 7 for y in ys]) == pytest.approx(pearson(xs, ys), rel=1e-12)


@pytest.mark.parametrize("xs, ys", [([], []), ([1.0], [2.0]), ([1.0, 2.0], [1.0, 2.0]), ([1.0, 2.0], [2.0, 1.0])])
def test_pearson_is_nan_with_fewer_than_three_points(xs, ys):
    assert math.isnan(pearson(xs, ys))


@pytest.mark.parametrize("xs, ys", [
    ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),  # no spread in x
    ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]),  # no spread in y
    ([0.1, 0.1, 0.1], [1.0, 2.0, 4.0]),  # constant, but its float mean is not exactly 0.1
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
])
def test_pearson_is_nan_without_spread(xs, ys):
    assert math.isnan(pearson(xs, ys))


def test_pearson_drops_non_finite_pairs():
    nan, inf = float("nan"), float("inf")
    assert pearson([1, 2, nan, 3, 4], [2, 4, 0, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, inf, 4, 2]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 2, nan], [1, 2, 3]))  # 2 finite pairs left


def test_pearson_stays_in_range_and_rejects_unpaired_input():
    xs = [1e-3 * i for i in range(50)]
    assert -1.0 <= pearson(xs, [3 * x + 1e-9 for x in xs]) <= 1.0
    with pytest.raises(ValueError, match="paired"):
        pearson([1, 2, 3], [1, 2])
