"""Golden metrics: what every algorithm config logs in its first 3 iterations (fp32, seed 0).

Recorded once from the code as it was before the learner was reshaped, and compared by
tests/test_golden_metrics.py, so a refactor that changes any logged number fails. Record anew
only for an intentional change (its own commit, before/after numbers in the commit message):

    .venv/bin/python tests/golden_metrics.py            # writes tests/data/golden_metrics.json
    .venv/bin/python tests/golden_metrics.py repo_r     # re-records only these algorithms

Each run goes through the real entry point (`rlx.train.train`: Lightning Trainer, MLflow sqlite
store) with experiment=debug, one intra-op thread (so reductions sum in a fixed order) and its
own warm-start cache; the values are read back from the MLflow store.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from rlx.config import CONF_DIR

GOLDEN_FILE = Path(__file__).parent / "data" / "golden_metrics.json"
ALGORITHMS = sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml"))
# wall-clock figures differ run to run; everything else a run logs is deterministic
VOLATILE_PREFIXES = ("time/", "perf/")


def golden_config(store: Path, cache_dir: Path, algorithm: str):
    """The composed config of one golden run, every output under `store`."""
    overrides = [
        f"algorithm={algorithm}", "experiment=debug", "precision=fp32", "seed=0", "trainer.num_threads=1",
        f"logger.tracking_uri=sqlite:///{store}/mlflow.db", f"logger.artifact_location={store}/artifacts",
        f"checkpoint.dir={store}/checkpoints", f"cache_dir={cache_dir}", f"run_name=golden-{algorithm}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def logged_metrics(store: Path, run_name: str) -> dict[str, dict[str, float]]:
    """{metric: {step: value}} of the run named run_name, timings left out; the run's summary tags
    (summary/...) as {"summary": value}."""
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    run = next(r for r in client.search_runs(experiments) if r.info.run_name == run_name)
    out = {}
    for key in sorted(run.data.metrics):
        if key.startswith(VOLATILE_PREFIXES):
            continue
        out[key] = {str(m.step): m.value for m in client.get_metric_history(run.info.run_id, key)}
    for key, value in run.data.tags.items():  # one-off values (rlx.tracking.summary_tags)
        if key.startswith("summary/"):
            out[key] = {"summary": float(value)}
    return dict(sorted(out.items()))


def run_golden(algorithm: str, store: Path, cache_dir: Path) -> dict[str, dict[str, float]]:
    """Train one algorithm config for 3 iterations and return what it logged."""
    from rlx.train import train

    threads = torch.get_num_threads()
    try:
        train(golden_config(store, cache_dir, algorithm))
    finally:
        torch.set_num_threads(threads)
    return logged_metrics(store, f"golden-{algorithm}")


def record(algorithms=ALGORITHMS) -> dict:
    """Run these algorithm configs (default: all) and write their records into the golden file,
    keeping the other algorithms' records."""
    golden = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in algorithms:
            golden[algorithm] = run_golden(algorithm, Path(tmp) / "store", Path(tmp) / "cache")
            print(f"recorded {algorithm}: {len(golden[algorithm])} metrics", file=sys.stderr)
    GOLDEN_FILE.parent.mkdir(exist_ok=True)
    GOLDEN_FILE.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    return golden


if __name__ == "__main__":
    record(sys.argv[1:] or ALGORITHMS)
