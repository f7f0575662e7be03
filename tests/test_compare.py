"""rlx-compare end to end: a real MLflow sqlite store, synthetic runs of known values."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from rlx import compare  # noqa: E402
from rlx import results_table  # noqa: E402
from rlx.compare import main  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SE3 = 0.1 / math.sqrt(3)  # s.e. of three values spaced by 0.1 (std ddof=1 = 0.1)


def _run(client, exp_id, *, algo, precision, seed, sweep, final, histories=None,
         status="FINISHED", tags=None, early=None):
    """Create one finished run with flattened params, a sweep_id tag, final metric values
    (logged at step 10) and histories. ``early`` values are logged at step 5 *after* the final
    ones, so "final" must mean the highest step, not the latest write."""
    run = client.create_run(exp_id, run_name=f"{algo}-{precision}-s{seed}",
                            tags={"sweep_id": sweep, **(tags or {})})
    rid = run.info.run_id
    for k, v in {"algorithm.name": algo, "precision.name": precision, "seed": str(seed),
                 "algorithm.regulator.zeta_max": "1.0"}.items():
        client.log_param(rid, k, v)
    for metric, points in (histories or {}).items():
        for step, value in points:
            client.log_metric(rid, metric, value, step=step)
    for metric, value in final.items():
        client.log_metric(rid, metric, value, step=10)
    for metric, value in (early or {}).items():
        client.log_metric(rid, metric, value, step=5)
    client.set_terminated(rid, status=status)
    return rid


def _curves(seed: int, zeta: bool = False) -> dict:
    """Histories of one synthetic run (11 iterations)."""
    h = {
        "train/entropy": [(i, 0.9 - 0.05 * i + 0.01 * seed) for i in range(11)],
        "train/reward_mean": [(i, 0.4 + 0.05 * i) for i in range(11)],
        "train/entropy_pred_delta": [(i, -0.01 * (i % 4) - 0.001 * seed) for i in range(1, 11)],
        "train/entropy_meas_delta": [(i, -0.012 * (i % 4)) for i in range(1, 11)],
        "train/clipfrac_low": [(0, 0.1 * seed), (10, 0.1 * seed + 0.2)],  # run mean 0.1*seed+0.1
        "train/clipfrac_high": [(0, 0.0), (10, 0.002)],  # run mean 0.001
    }
    if zeta:
        h["control/zeta"] = [(i, 0.01 * 2 ** min(i, 5)) for i in range(10)]
    return h


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module: experiment 'arith' (sweep s1) and 'other' (sweep s2).

    arith, finished: grpo/fp32 x 3 seeds, repo_r/fp32 x 2 seeds, rloo/bf16 x 1 seed;
    arith, failed: grpo/fp32 seed 3 (pass@1 0.0); other: dapo/fp32 x 1 (tag team=x).
    """
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    arts = root / "mlartifacts"
    arith = client.create_experiment("arith", artifact_location=(arts / "1").as_uri())
    other = client.create_experiment("other", artifact_location=(arts / "2").as_uri())
    for seed, p1 in enumerate([0.5, 0.6, 0.7]):
        _run(client, arith, algo="grpo", precision="fp32", seed=seed, sweep="s1",
             final={"eval/pass_at_1": p1, "eval/pass_at_k/4": 0.8 + 0.1 * seed,
                    "eval/pass_at_k/8": 0.9 + 0.05 * seed, "eval/distinct_correct": 1.0 + seed,
                    "train/entropy_change_pct": -90.0 + 10 * seed,
                    "train/entropy_cumulative": 10.0 * (seed + 1)},
             histories=_curves(seed), early={"eval/pass_at_1": 0.99})
    for seed, p1 in enumerate([0.4, 0.5]):
        final = {"eval/pass_at_1": p1, "eval/pass_at_k/8": 1.0,
                 "train/entropy_change_pct": -10.0 - 10 * seed, "control/zeta": 0.25 * (seed + 1)}
        if seed == 0:
            final["eval/distinct_correct"] = 3.0  # only one of the two logged it
        _run(client, arith, algo="repo_r", precision="fp32", seed=seed, sweep="s1", final=final,
             histories=_curves(seed, zeta=True))
    _run(client, arith, algo="rloo", precision="bf16", seed=0, sweep="s1",
         final={"eval/pass_at_1": 0.8, "eval/pass_at_k/8": 1.0}, histories=_curves(0))
    _run(client, arith, algo="grpo", precision="fp32", seed=3, sweep="s1", status="FAILED",
         final={"eval/pass_at_1": 0.0})
    _run(client, other, algo="dapo", precision="fp32", seed=0, sweep="s2", tags={"team": "x"},
         final={"eval/pass_at_1": 0.3})
    return {"uri": uri, "root": root, "client": client}


def _cli(store, tmp_path, *extra, summary=False):
    """Run the real CLI on the store; return (exit code, out dir)."""
    out = tmp_path / "out"
    argv = ["--tracking-uri", store["uri"], "--out", str(out), *extra]
    if not summary:
        argv.append("--no-summary-run")
    return main(argv), out


def _results(out: Path) -> dict[tuple[str, ...], dict[str, str]]:
    """results.csv keyed by (algorithm.name, precision.name)."""
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return {(r["algorithm.name"], r["precision.name"]): r for r in rows}


def test_table_means_standard_errors_and_groups(store, tmp_path, capsys):
    rc, out = _cli(store, tmp_path, "--experiment", "arith")
    assert rc == 0
    res = _results(out)
    assert set(res) == {("grpo", "fp32"), ("repo_r", "fp32"), ("rloo", "bf16")}

    grpo = res[("grpo", "fp32")]
    assert grpo["n_runs"] == "3"  # the FAILED seed is left out by default
    assert float(grpo["pass_at_1_mean"]) == pytest.approx(0.6)  # final = highest step, not 0.99
    assert float(grpo["pass_at_1_se"]) == pytest.approx(SE3)
    assert float(grpo["pass_at_k_8_mean"]) == pytest.approx(0.95)  # default: largest k
    assert float(grpo["pass_at_k_8_se"]) == pytest.approx(0.05 / math.sqrt(3))
    assert "pass_at_k_4_mean" not in grpo
    assert float(grpo["distinct_correct_mean"]) == pytest.approx(2.0)
    assert float(grpo["distinct_correct_se"]) == pytest.approx(1 / math.sqrt(3))
    assert float(grpo["entropy_change_pct_mean"]) == pytest.approx(-80.0)
    assert float(grpo["entropy_change_pct_se"]) == pytest.approx(10 / math.sqrt(3))
    assert float(grpo["entropy_cumulative_mean"]) == pytest.approx(20.0)
    assert float(grpo["clipfrac_low_mean"]) == pytest.approx(0.2)  # run means 0.1, 0.2, 0.3
    assert float(grpo["clipfrac_low_se"]) == pytest.approx(SE3)
    assert float(grpo["clipfrac_high_mean"]) == pytest.approx(0.001)  # CSV: a fraction
    assert float(grpo["reward_mean_mean"]) == pytest.approx(0.9)
    assert grpo["zeta_n"] == "0" and grpo["zeta_mean"] == ""

    repo = res[("repo_r", "fp32")]
    assert float(repo["pass_at_1_mean"]) == pytest.approx(0.45)
    assert float(repo["pass_at_1_se"]) == pytest.approx(0.05)
    assert float(repo["zeta_mean"]) == pytest.approx(0.375)
    assert float(repo["zeta_se"]) == pytest.approx(0.125)
    assert repo["distinct_correct_n"] == "1"

    rloo = res[("rloo", "bf16")]
    assert rloo["n_runs"] == "1" and rloo["pass_at_1_se"] == ""
    assert "eps_high_mean" not in rloo  # no run logged control/eps_high: column dropped

    printed = capsys.readouterr().out
    assert "0.600 ± 0.058" in printed  # grpo pass@1 in the terminal table
    assert "3.00 (n=1)" in printed  # repo_r distinct correct, logged by 1 of 2 runs
    rloo_line = next(line for line in printed.splitlines() if line.startswith("rloo "))
    assert "0.800" in rloo_line and "±" not in rloo_line  # n=1: no ± part
    assert f"table: {out / 'results.md'}" in printed
    assert f"entropy plot: {out / 'entropy_vs_iteration.png'}" in printed

    md = (out / "results.md").read_text()
    assert "| algorithm.name | precision.name | runs | pass@1 |" in md
    assert "| grpo | fp32 | 3 | 0.600 ± 0.058 |" in md
    assert "| 20.00 ± 5.77 | 0.10 ± 0.00 |" in md  # clip% low / high: percent of tokens

    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_plots_written_as_png(store, tmp_path):
    rc, out = _cli(store, tmp_path, "--experiment", "arith")
    assert rc == 0
    for name in ("entropy_vs_iteration", "reward_vs_entropy", "pass_at_k_vs_k",
                 "controllers_vs_iteration", "theorem1_pred_vs_meas"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name


def test_plots_skipped_with_a_note_when_metrics_absent(store, tmp_path, capsys):
    rc, out = _cli(store, tmp_path, "--experiment", "other")  # dapo: only eval/pass_at_1
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped entropy_vs_iteration.png" in printed
    assert "skipped theorem1_pred_vs_meas.png" in printed
    assert not list(out.glob("*.png"))
    assert "entropy plot:" not in printed


def test_selection_by_sweep_id_tag_and_filter(store, tmp_path):
    rc, out = _cli(store, tmp_path, "--sweep-id", "s2")
    assert rc == 0 and set(_results(out)) == {("dapo", "fp32")}

    rc, out = _cli(store, tmp_path, "--tag", "team=x")
    assert rc == 0 and set(_results(out)) == {("dapo", "fp32")}

    rc, out = _cli(store, tmp_path, "--filter", "params.`algorithm.name` = 'repo_r'")
    assert rc == 0 and set(_results(out)) == {("repo_r", "fp32")}

    rc, out = _cli(store, tmp_path)  # default: every experiment
    assert rc == 0 and len(_results(out)) == 4

    rc, out = _cli(store, tmp_path, "--sweep-id", "s1", "--include-unfinished")
    assert rc == 0 and _results(out)[("grpo", "fp32")]["n_runs"] == "4"


def test_group_by_and_k(store, tmp_path):
    rc, out = _cli(store, tmp_path, "--experiment", "arith", "--group-by", "algorithm.name,seed",
                   "--k", "4", "8")
    assert rc == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["algorithm.name"], r["seed"]) for r in rows] == [
        ("grpo", "0"), ("grpo", "1"), ("grpo", "2"), ("repo_r", "0"), ("repo_r", "1"),
        ("rloo", "0")]
    assert rows[2]["pass_at_k_4_mean"] == repr(1.0) and rows[2]["pass_at_k_8_mean"] == repr(1.0)


def test_summary_run_logs_artifacts(store, tmp_path, capsys):
    rc, out = _cli(store, tmp_path, "--sweep-id", "s1", summary=True)
    assert rc == 0
    client = store["client"]
    exp = client.get_experiment_by_name("rlx-compare")
    assert exp is not None
    # artifacts go next to the compared runs' artifacts, not into the working directory
    assert exp.artifact_location == (store["root"] / "mlartifacts" / "rlx-compare").as_uri()
    runs = client.search_runs([exp.experiment_id], "tags.sweep_id = 's1'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "sweep_id=s1" in run.data.tags["rlx.selection"]
    assert run.data.params["group_by"] == "algorithm.name,precision.name"
    assert run.data.params["n_runs"] == "6"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.md", "results.csv", "runs.csv", "entropy_vs_iteration.png",
            "theorem1_pred_vs_meas.png"} <= logged
    assert f"summary run {run.info.run_id}" in capsys.readouterr().out

    # the summary run itself is never selected by a later comparison of all experiments
    rc, out = _cli(store, tmp_path)
    assert rc == 0 and len(_results(out)) == 4


def test_empty_selection_is_one_clear_line(store, tmp_path, capsys):
    rc, out = _cli(store, tmp_path, "--sweep-id", "no-such-sweep")
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "no runs selected" in err and "sweep_id=no-such-sweep" in err and store["uri"] in err
    assert not out.exists()


def test_bad_filter_is_one_clear_line(store, tmp_path, capsys):
    rc, _ = _cli(store, tmp_path, "--filter", "metrics.x >> 1")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "invalid --filter 'metrics.x >> 1'" in err


def test_unknown_experiment_and_missing_store(store, tmp_path, capsys):
    rc, _ = _cli(store, tmp_path, "--experiment", "nope")
    assert rc == 1
    err = capsys.readouterr().err
    assert "no experiment named 'nope'" in err and "arith" in err

    missing = tmp_path / "none.db"
    assert main(["--tracking-uri", f"sqlite:///{missing}", "--no-summary-run"]) == 1
    assert "no MLflow store" in capsys.readouterr().err
    assert not missing.exists()  # the check must not create an empty store


def test_tracking_uri_from_environment(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    assert main(["--sweep-id", "s2", "--out", str(tmp_path / "o"), "--no-summary-run"]) == 0


def test_build_filter_and_tag_parsing():
    assert compare.build_filter("s1", [("team", "x")], "params.seed = '0'", False) == (
        "attributes.status = 'FINISHED' AND tags.sweep_id = 's1' AND tags.`team` = 'x' "
        "AND params.seed = '0'")
    assert compare.build_filter(None, [], None, True) == ""
    assert compare.build_filter("it's", [], None, True) == 'tags.sweep_id = "it\'s"'
    assert compare.parse_tag("a.b=c=d") == ("a.b", "c=d")
    with pytest.raises(Exception):
        compare.parse_tag("novalue")


def test_format_cell():
    fmt = results_table.format_cell
    assert fmt(results_table.Cell(0.6, 0.0577, 3), ".3f", 3) == "0.600 ± 0.058"
    assert fmt(results_table.Cell(0.8, None, 1), ".3f", 1) == "0.800"
    assert fmt(results_table.Cell(3.0, None, 1), ".2f", 2) == "3.00 (n=1)"
    assert fmt(None, ".3f", 2) == results_table.MISSING


def test_module_help_runs():
    proc = subprocess.run([sys.executable, "-m", "rlx.compare", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for opt in ("--tracking-uri", "--experiment", "--sweep-id", "--tag", "--filter",
                "--group-by", "--out", "--k", "--no-summary-run"):
        assert opt in proc.stdout


def test_summary_artifact_location_follows_the_runs():
    class Exp:
        def __init__(self, loc, eid="3", name="arith"):
            self.artifact_location, self.experiment_id, self.name = loc, eid, name

    loc = compare.summary_artifact_location
    assert loc("sqlite:///x.db", [Exp("file:///a/mlruns/3")]) == "file:///a/mlruns/rlx-compare"
    assert loc("sqlite:///x.db", [Exp("s3://b/p/arith")]) == "s3://b/p/rlx-compare"
    assert loc("sqlite:///x.db", [Exp("/w/outputs/mlartifacts")]) == "/w/outputs/mlartifacts"
    assert loc("http://mlflow:5000", [Exp("mlflow-artifacts:/3")]) is None
