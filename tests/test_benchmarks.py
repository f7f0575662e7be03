"""The benchmark scripts run end to end on a very small workload, so they cannot rot.
No timing is asserted: the figures are for people (docs/benchmarks.md), not for CI."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_trl_side_by_side_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script("benchmarks/trl_bench.py", "--smoke", "--cache-dir", str(tmp_path / "cache"), "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    sides = {r["side"] for r in rows}
    if importlib.util.find_spec("trl") is None:
        assert "TRL is not installed" in proc.stdout and sides == {"rlx"}
    else:
        assert sides == {"rlx", "trl"}
        assert "rlx/TRL" in proc.stdout
    for row in rows:
        assert row["s_per_iter"] > 0 and row["peak_rss_mb"] > 0 and row["tokens_per_s"] > 0


def test_iteration_profile_smoke(tmp_path):
    out = tmp_path / "profile.json"
    run_script("benchmarks/iteration_profile.py", "--smoke", "--cache-dir", str(tmp_path / "cache"), "--json", str(out))
    result = json.loads(out.read_text())
    stages = result["profile"]
    for key in ("generation", "x_hf_generate", "x_separate_logprobs_pass", "x_entropy_own_cost", "reference_forward",
                "backward", "optimizer", "mlflow_log", "iteration"):
        assert key in stages, key
    assert result["peak"]["fp32"] > 0 and result["scaling"][0]["gflops_per_s"] > 0
