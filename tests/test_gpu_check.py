"""benchmarks/gpu_check.py --cpu: the GPU check's code paths at tiny sizes on the CPU, so the
check that runs on a GPU machine cannot rot. Its table's statuses and numbers are checked here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

TRAINING = [f"train {a} {p}" for a in ("grpo", "repo_r") for p in ("bf16-true", "bf16-mixed", "16-mixed")]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    """The JSON table of one `gpu_check.py --cpu` run (the TRL row left out: tests/test_benchmarks.py
    runs benchmarks/trl_bench.py --smoke itself)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu", "--skip-trl", "--out", str(tmp / "out"),
         "--work", str(tmp / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "| check | kind | status | numbers | note |" in proc.stdout
    assert (tmp / "out" / "gpu_check.md").read_text().startswith("rlx GPU check (cpu mode)")
    result = json.loads((tmp / "out" / "gpu_check.json").read_text())
    result["by_name"] = {row["name"]: row for row in result["rows"]}
    return result


def test_every_correctness_row_passes_or_is_skipped_for_the_cpu(table):
    rows = [r for r in table["rows"] if r["kind"] == "correctness"]
    assert {r["name"] for r in rows} >= {"sampler: first-token distribution", *TRAINING,
                                         "checkpoint + resume=last", "fsdp devices=1"}
    for row in rows:
        if row["name"] == "fsdp devices=1":
            assert row["status"] == "skipped" and "cpu" in row["note"]
        else:
            assert row["status"] == "ok", row


def test_sampler_and_generate_share_the_cpu_first_token_distribution(table):
    n = table["by_name"]["sampler: first-token distribution"]["numbers"]
    for side in ("rlx", "hf"):
        assert n[f"{side}_max_prob_error"] < 1e-5  # the same fp32 arithmetic on the same device
        assert 0 < n[f"{side}_max_freq_dev"] < n["freq_tolerance"]


def test_training_rows_used_their_precision_and_trained(table):
    for name in TRAINING:
        n = table["by_name"][name]["numbers"]
        assert n["steps"] > 0 and n["grad_norm"] > 0 and n["s_per_iteration"] > 0
        assert n["clip_mismatch"] < 2e-2  # the optimizer applied min(clipped norm, max_norm)
        if name.endswith("16-mixed") and "bf16" not in name:
            assert n["preset"] == "fp16" and n["loss_scale"] > 1  # a GradScaler scaled the loss


def test_resume_matches_the_straight_run(table):
    assert table["by_name"]["checkpoint + resume=last"]["numbers"]["max_rel_diff_vs_straight"] < 1e-6


def test_throughput_rows_have_positive_numbers(table):
    rows = {r["name"]: r for r in table["rows"] if r["kind"] == "throughput"}
    for name in ("rollout rlx", "rollout hf_generate", "update (fwd+bwd+AdamW)"):
        assert rows[name]["status"] == "ok", rows[name]
        for key in ("tokens_per_s", "mfu", "peak_mem_gib"):
            assert rows[name]["numbers"][key] > 0, (name, key)
    trl = next(r for r in table["rows"] if r["name"].startswith("trl"))
    assert trl["status"] == "skipped"
    assert table["environment"]["mode"] == "cpu"
