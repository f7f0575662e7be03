"""Plots of rlx runs: one run's own curves, and comparisons of groups of runs.

Pure matplotlib (``Figure`` API, Agg renderer, PNG), no MLflow: callers pass
plain data.

- A *history* is ``list[tuple[int, float]]``: (iteration, value) pairs of one metric of one run.
- A *run* is ``dict[str, history]``: metric name -> history (names as logged, e.g.
  ``train/entropy``).
- A *group* maps a label (e.g. ``"grpo, fp32"``) to the list of its runs (seeds).

Group curves are the mean over the runs that logged the metric at that iteration, with a band of
+- the standard error over those runs (``std(ddof=1) / sqrt(n)``; no band where n = 1).
"""

from __future__ import annotations

import math
from pathlib import Path

# The object-oriented Figure API renders PNG with Agg whatever pyplot's backend is: no display
# needed, no global backend switch (importing this module in a notebook leaves it alone), and no
# figures left open in pyplot's registry.
from matplotlib.figure import Figure

from rlx.metrics import pearson

History = list[tuple[int, float]]
Run = dict[str, History]

ENTROPY = "train/entropy"
REWARD = "train/reward_mean"
ENTROPY_CHANGE_PCT = "train/entropy_change_pct"
ENTROPY_PRED_DELTA = "train/entropy_pred_delta"
ENTROPY_MEAS_DELTA = "train/entropy_meas_delta"
CONTROLLER_METRICS = ("control/zeta", "control/eps_high", "control/entropy_coef")
PASS_AT_K_PREFIX = "eval/pass_at_k/"
PASS_AT_1 = "eval/pass_at_1"

# File names inside the output folder; the keys are what `comparison_plots` returns.
PLOT_FILES = {
    "entropy": "entropy_vs_iteration.png",
    "reward_vs_entropy": "reward_vs_entropy.png",
    "pass_at_k": "pass_at_k_vs_k.png",
    "controllers": "controllers_vs_iteration.png",
    "theorem1": "theorem1_pred_vs_meas.png",
}


# ---------------------------------------------------------------------------------------------
# Statistics (pure)
# ---------------------------------------------------------------------------------------------
def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error: ``(mean, std(ddof=1) / sqrt(n))``; the SE is None if n < 2."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_se of no values")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def group_curve(histories: list[History]) -> tuple[list[int], list[float], list[float]]:
    """Mean curve of several runs' histories of one metric.

    For every iteration logged by at least one run: the mean of the finite values logged there
    and their standard error (0.0 where only one run logged it). If a run logged an iteration
    twice, its last value counts. Returns ``(steps, means, ses)`` sorted by step.
    """
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in dict(history).items():  # dict(): last value per step wins
            if math.isfinite(value):
                by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    means, ses = [], []
    for step in steps:
        mean, se = mean_se(by_step[step])
        means.append(mean)
        ses.append(se if se is not None else 0.0)
    return steps, means, ses


def paired_by_step(a: History, b: History) -> tuple[list[float], list[float]]:
    """Values of two histories at the iterations both logged, as two aligned lists (by step)."""
    da, db = dict(a), dict(b)
    steps = sorted(set(da) & set(db))
    return [da[s] for s in steps], [db[s] for s in steps]


def histories_of(runs: list[Run], metric: str) -> list[History]:
    """The non-empty histories of ``metric`` among ``runs``."""
    return [run[metric] for run in runs if run.get(metric)]


# ---------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------
def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path


def _draw_band(ax, histories: list[History], label: str, color=None) -> None:
    """Draw the mean curve of ``histories`` with a +- standard-error band on ``ax``."""
    steps, means, ses = group_curve(histories)
    if not steps:
        return
    (line,) = ax.plot(steps, means, label=f"{label} (n={len(histories)})", color=color, lw=1.6)
    if len(histories) > 1:
        lo = [m - s for m, s in zip(means, ses)]
        hi = [m + s for m, s in zip(means, ses)]
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def _legend(ax) -> None:
    """A small legend, only when something was labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)


# ---------------------------------------------------------------------------------------------
# Comparison plots (one PNG each; None when the metrics are absent)
# ---------------------------------------------------------------------------------------------
def plot_metric_vs_iteration(
    groups: dict[str, list[Run]], metric: str, path: str | Path, ylabel: str | None = None
) -> Path | None:
    """Mean of ``metric`` vs iteration per group, band = +- standard error over seeds."""
    if not any(histories_of(runs, metric) for runs in groups.values()):
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for label, runs in groups.items():
        hs = histories_of(runs, metric)
        if hs:
            _draw_band(ax, hs, label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel or metric)
    ax.set_title(f"{metric} (mean ± s.e. over seeds)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_entropy(groups: dict[str, list[Run]], path: str | Path) -> Path | None:
    """Token entropy (``train/entropy``, nats) vs iteration per group, mean ± s.e. band."""
    return plot_metric_vs_iteration(groups, ENTROPY, path, ylabel="token entropy (nats)")


def plot_reward_vs_entropy(groups: dict[str, list[Run]], path: str | Path) -> Path | None:
    """Trajectory of (mean entropy, mean reward) over iterations per group.

    Each group's mean curves of ``train/entropy`` and ``train/reward_mean`` are paired at the
    iterations both have; a circle marks the first iteration, a star the last.
    """
    curves = {}
    for label, runs in groups.items():
        es, em, _ = group_curve(histories_of(runs, ENTROPY))
        rs, rm, _ = group_curve(histories_of(runs, REWARD))
        x, y = paired_by_step(list(zip(es, em)), list(zip(rs, rm)))
        if x:
            curves[label] = (x, y)
    if not curves:
        return None
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for label, (x, y) in curves.items():
        (line,) = ax.plot(x, y, label=label, lw=1.4, alpha=0.9)
        ax.plot(x[0], y[0], "o", color=line.get_color(), ms=6)
        ax.plot(x[-1], y[-1], "*", color=line.get_color(), ms=11)
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("mean reward")
    ax.set_title("reward vs entropy over training (o start, * end)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def pass_at_k_finals(final_metrics: dict[str, float]) -> dict[int, float]:
    """k -> final pass@k of one run, from its final metrics (``eval/pass_at_k/<k>``).

    ``eval/pass_at_1`` stands in for k = 1 when ``eval/pass_at_k/1`` was not logged.
    """
    out: dict[int, float] = {}
    for key, value in final_metrics.items():
        if key.startswith(PASS_AT_K_PREFIX):
            suffix = key[len(PASS_AT_K_PREFIX):]
            if suffix.isdigit():
                out[int(suffix)] = value
    if 1 not in out and PASS_AT_1 in final_metrics and out:
        out[1] = final_metrics[PASS_AT_1]
    return out


def plot_pass_at_k(finals: dict[str, list[dict[str, float]]], path: str | Path) -> Path | None:
    """Final pass@k vs k per group (mean over seeds, error bars = s.e.), log2 k axis.

    ``finals`` maps a group label to its runs' final metric values.
    """
    series = {}
    for label, runs in finals.items():
        per_k: dict[int, list[float]] = {}
        for run in runs:
            for k, v in pass_at_k_finals(run).items():
                if math.isfinite(v):
                    per_k.setdefault(k, []).append(v)
        if per_k:
            ks = sorted(per_k)
            stats = [mean_se(per_k[k]) for k in ks]
            series[label] = (ks, [m for m, _ in stats], [se or 0.0 for _, se in stats])
    if not series:
        return None
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    for label, (ks, means, ses) in series.items():
        ax.errorbar(ks, means, yerr=ses, label=label, marker="o", ms=4, capsize=3, lw=1.4)
    all_ks = sorted({k for ks, _, _ in series.values() for k in ks})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_ks)
    ax.set_xticklabels([str(k) for k in all_ks])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (final)")
    ax.set_title("final pass@k vs k (mean ± s.e. over seeds)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_controllers(groups: dict[str, list[Run]], path: str | Path) -> Path | None:
    """Controller values (``control/zeta``, ``control/eps_high``, ``control/entropy_coef``)
    vs iteration, one panel per controller that any run logged, mean ± s.e. band per group."""
    present = [m for m in CONTROLLER_METRICS if any(histories_of(r, m) for r in groups.values())]
    if not present:
        return None
    fig = Figure(figsize=(7, 3.0 * len(present)))
    axes = fig.subplots(len(present), 1, sharex=True, squeeze=False)[:, 0]
    for ax, metric in zip(axes, present):
        for label, runs in groups.items():
            hs = histories_of(runs, metric)
            if hs:
                _draw_band(ax, hs, label)
        ax.set_ylabel(metric.split("/", 1)[1])
        ax.grid(alpha=0.3)
        _legend(ax)
    axes[0].set_title("controller values (mean ± s.e. over seeds)")
    axes[-1].set_xlabel("iteration")
    return _save(fig, path)


def theorem1_points(runs: list[Run]) -> tuple[list[float], list[float]]:
    """All (predicted, measured) entropy-change pairs of a group's runs, paired by iteration."""
    xs: list[float] = []
    ys: list[float] = []
    for run in runs:
        if run.get(ENTROPY_PRED_DELTA) and run.get(ENTROPY_MEAS_DELTA):
            x, y = paired_by_step(run[ENTROPY_PRED_DELTA], run[ENTROPY_MEAS_DELTA])
            xs += x
            ys += y
    return xs, ys


def plot_theorem1(groups: dict[str, list[Run]], path: str | Path) -> Path | None:
    """Theorem 1 check: predicted (``train/entropy_pred_delta``) vs measured
    (``train/entropy_meas_delta``) entropy change per iteration, a scatter per group with the
    Pearson correlation r in the legend, and the line measured = predicted."""
    points = {label: theorem1_points(runs) for label, runs in groups.items()}
    points = {label: p for label, p in points.items() if p[0]}
    if not points:
        return None
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    lo, hi = math.inf, -math.inf
    for label, (xs, ys) in points.items():
        r = pearson(xs, ys)
        r_text = "n/a" if math.isnan(r) else f"{r:+.2f}"
        ax.scatter(xs, ys, s=10, alpha=0.6, label=f"{label} (r = {r_text}, {len(xs)} pts)")
        finite = [v for v in xs + ys if math.isfinite(v)]
        if finite:
            lo, hi = min(lo, *finite), max(hi, *finite)
    if lo < hi:
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="measured = predicted")
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("predicted entropy change (Theorem 1)")
    ax.set_ylabel("measured entropy change")
    ax.set_title("Theorem 1: predicted vs measured entropy change per iteration")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def comparison_plots(
    groups: dict[str, list[Run]],
    finals: dict[str, list[dict[str, float]]],
    out_dir: str | Path,
    note=print,
) -> dict[str, Path]:
    """Draw every comparison plot into ``out_dir`` (names in ``PLOT_FILES``).

    ``groups``: label -> runs' histories; ``finals``: label -> runs' final metric values.
    A plot whose metrics no run logged is skipped with a one-line ``note``. Returns the plots
    written, keyed as in ``PLOT_FILES``.
    """
    out_dir = Path(out_dir)
    makers = {
        "entropy": (lambda p: plot_entropy(groups, p), ENTROPY),
        "reward_vs_entropy": (
            lambda p: plot_reward_vs_entropy(groups, p),
            f"{ENTROPY} and {REWARD}",
        ),
        "pass_at_k": (lambda p: plot_pass_at_k(finals, p), f"{PASS_AT_K_PREFIX}<k>"),
        "controllers": (lambda p: plot_controllers(groups, p), ", ".join(CONTROLLER_METRICS)),
        "theorem1": (
            lambda p: plot_theorem1(groups, p),
            f"{ENTROPY_PRED_DELTA} and {ENTROPY_MEAS_DELTA}",
        ),
    }
    written: dict[str, Path] = {}
    for name, (make, needs) in makers.items():
        path = make(out_dir / PLOT_FILES[name])
        if path is None:
            note(f"skipped {PLOT_FILES[name]}: no selected run logged {needs}")
        else:
            written[name] = path
    return written


# ---------------------------------------------------------------------------------------------
# One training run's own curves
# ---------------------------------------------------------------------------------------------
RUN_CURVE_PANELS = (
    (ENTROPY, "token entropy (nats)"),
    (REWARD, "mean reward"),
    (ENTROPY_CHANGE_PCT, "entropy change vs iteration 0 (%)"),
)


def plot_run_curves(history: dict[str, list[tuple[int, float]]], path) -> Path:
    """One training run's entropy, reward and entropy change % vs iteration, in one PNG.

    ``history`` maps metric names (``train/entropy``, ``train/reward_mean``,
    ``train/entropy_change_pct``; others are ignored) to (iteration, value) pairs. A panel whose
    metric is missing says so instead of failing. Returns ``path``.
    """
    fig = Figure(figsize=(7, 8))
    axes = fig.subplots(len(RUN_CURVE_PANELS), 1, sharex=True)
    for ax, (metric, ylabel) in zip(axes, RUN_CURVE_PANELS):
        points = sorted(dict(history.get(metric) or []).items())
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], lw=1.5)
            if metric == ENTROPY_CHANGE_PCT:
                ax.axhline(0, color="grey", lw=0.8, ls="--")
        else:
            ax.text(0.5, 0.5, f"{metric} not logged", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.set_ylabel(ylabel)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    return _save(fig, path)
