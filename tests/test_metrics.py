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
    assert math.isnan(pearson([1, 2], [1, 2]))
