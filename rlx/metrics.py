"""Evaluation statistics: unbiased pass@k, distinct correct answers, Pearson correlation."""

from __future__ import annotations

from math import comb, isfinite, nan, sqrt
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
    """Pearson correlation of paired samples (x_i, y_i):

        r = sum_i (x_i - mx)(y_i - my) / sqrt(sum_i (x_i - mx)^2 * sum_i (y_i - my)^2)

    over the pairs whose two values are both finite (a pair holding NaN or inf is dropped, not
    propagated); mx, my are the means over those pairs. Always a float in [-1, 1], or nan when r
    says nothing:
      * fewer than 3 finite pairs (two points always give r = +-1);
      * no spread: every x equal or every y equal (tested on the values themselves, so the
        rounding of the mean cannot turn a constant series into a spurious r).
    xs and ys of different lengths: ValueError.
    """
    if len(xs) != len(ys):
        raise ValueError(f"pearson needs paired samples: got {len(xs)} xs and {len(ys)} ys")
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if isfinite(x) and isfinite(y)]
    n = len(pairs)
    if n < 3:
        return nan
    px, py = [x for x, _ in pairs], [y for _, y in pairs]
    if min(px) == max(px) or min(py) == max(py):
        return nan
    mx, my = sum(px) / n, sum(py) / n
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx = sum((x - mx) ** 2 for x in px)
    syy = sum((y - my) ** 2 for y in py)
    if sxx * syy == 0:  # spreads so small their product underflows
        return nan
    return max(-1.0, min(1.0, sxy / sqrt(sxx * syy)))


def pass_at_k_name(k: int) -> str:
    """The metric name of pass@k under a split: `pass_at_k/04`, `pass_at_k/16` (k zero-padded to two
    digits, so the MLflow UI, which sorts names as text, shows k in numeric order). pass@1 is
    `pass_at_1` (the fraction of correct samples, the same number), never `pass_at_k/01`."""
    return f"pass_at_k/{k:02d}"
