"""rlx.plots: the statistics behind the curves, and that every plot writes a valid PNG."""

from __future__ import annotations

import math

import pytest

from rlx import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = open(path, "rb").read()
    return data[:8] == PNG_MAGIC and len(data) > 5000


def test_mean_se():
    assert plots.mean_se([0.5, 0.6, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1 / math.sqrt(3)))
    assert plots.mean_se([2.0]) == (2.0, None)
    with pytest.raises(ValueError):
        plots.mean_se([])


def test_group_curve_aligns_steps_across_runs():
    a = [(0, 1.0), (1, 2.0), (2, 3.0)]
    b = [(0, 3.0), (1, 4.0)]  # a shorter run
    steps, means, ses = plots.group_curve([a, b])
    assert steps == [0, 1, 2]
    assert means == pytest.approx([2.0, 3.0, 3.0])
    assert ses == pytest.approx([1.0, 1.0, 0.0])  # std(ddof=1)=sqrt(2), /sqrt(2) = 1


def test_group_curve_ignores_non_finite_and_keeps_last_duplicate():
    steps, means, _ = plots.group_curve([[(0, 1.0), (0, 5.0), (1, float("nan"))]])
    assert steps == [0] and means == [5.0]


def test_pass_at_k_finals_uses_pass_at_1_for_k1():
    finals = {"eval/pass_at_1": 0.4, "eval/pass_at_k/8": 0.9, "eval/pass_at_k/16": 1.0,
              "train/entropy": 0.5}
    assert plots.pass_at_k_finals(finals) == {1: 0.4, 8: 0.9, 16: 1.0}
    assert plots.pass_at_k_finals({"eval/pass_at_1": 0.4}) == {}


def _group(seed_offsets, zeta=False):
    runs = []
    for s in seed_offsets:
        run = {
            "train/entropy": [(i, 0.9 - 0.05 * i + s) for i in range(20)],
            "train/reward_mean": [(i, 0.3 + 0.03 * i) for i in range(20)],
            "train/entropy_pred_delta": [(i, -0.01 * (i % 3) + s) for i in range(1, 20)],
            "train/entropy_meas_delta": [(i, -0.02 * (i % 3)) for i in range(1, 20)],
            "control/eps_high": [(i, 0.28 * 1.25 ** min(i, 5)) for i in range(20)],
        }
        if zeta:
            run["control/zeta"] = [(i, 0.01 * i) for i in range(20)]
        runs.append(run)
    return runs


def test_comparison_plots_write_every_png(tmp_path):
    groups = {"grpo, fp32": _group([0.0, 0.01, 0.02]), "repo_r, fp32": _group([0.0], zeta=True)}
    finals = {"grpo, fp32": [{"eval/pass_at_1": 0.5, "eval/pass_at_k/4": 0.8,
                              "eval/pass_at_k/8": 0.9}] * 3,
              "repo_r, fp32": [{"eval/pass_at_1": 0.4, "eval/pass_at_k/8": 0.95}]}
    notes = []
    written = plots.comparison_plots(groups, finals, tmp_path, note=notes.append)
    assert notes == []
    assert set(written) == set(plots.PLOT_FILES)
    for name, path in written.items():
        assert path == tmp_path / plots.PLOT_FILES[name] and _is_png(path), name


def test_comparison_plots_skip_absent_metrics(tmp_path):
    groups = {"a": [{"train/entropy": [(0, 1.0), (1, 0.9)]}]}
    notes = []
    written = plots.comparison_plots(groups, {"a": [{}]}, tmp_path, note=notes.append)
    assert set(written) == {"entropy"}
    assert len(notes) == 4 and all(n.startswith("skipped ") for n in notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entropy_vs_iteration.png"]


def test_plot_run_curves(tmp_path):
    history = {
        "train/entropy": [(i, 0.9 * 0.97 ** i) for i in range(30)],
        "train/reward_mean": [(i, min(1.0, 0.4 + 0.02 * i)) for i in range(30)],
        "train/entropy_change_pct": [(i, 100 * (0.97 ** i - 1)) for i in range(30)],
        "train/kl_ref": [(0, 0.0)],  # ignored
    }
    path = tmp_path / "sub" / "curves.png"
    assert plots.plot_run_curves(history, path) == path
    assert _is_png(path)


def test_plot_run_curves_tolerates_missing_metrics(tmp_path):
    path = plots.plot_run_curves({"train/entropy": [(0, 0.9), (1, 0.8)]}, str(tmp_path / "c.png"))
    assert _is_png(path)
    assert _is_png(plots.plot_run_curves({}, tmp_path / "empty.png"))


def test_plot_theorem1_without_a_correlation(tmp_path):
    """A group with too few points for a correlation (rlx.metrics.pearson gives nan) is still
    drawn, with r = n/a in its legend."""
    groups = {"short": [{"train/entropy_pred_delta": [(1, -0.01), (2, 0.02)],
                         "train/entropy_meas_delta": [(1, -0.03), (2, 0.01)]}],
              "long": _group([0.0])}
    path = plots.plot_theorem1(groups, tmp_path / "t1.png")
    assert path == tmp_path / "t1.png" and _is_png(path)
