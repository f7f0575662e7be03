"""Evaluation statistics: unbiased pass@k and distinct correct answers."""

from __future__ import annotations

from math import comb
from typing import Callable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k); 1 when fewer than k samples are wrong."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def distinct_correct(completions: Sequence[str], correct: Sequence[bool], key: Callable[[str], str]) -> int:
    """Number of different correct answers among the samples, compared by key(completion)."""
    return len({key(text) for text, ok in zip(completions, correct, strict=True) if ok})


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation of two equally long sequences; nan with fewer than 3 points or no spread."""
    n = len(xs)
    if n < 3:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / (sxx * syy) ** 0.5
