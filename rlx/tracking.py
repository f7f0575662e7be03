"""MLflow conventions: one run per Hydra job, flattened config as params, sweep tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from rlx.store import ensure_experiment

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': 1, 'c': '[1, 2]'} (lists kept whole, as text)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config (without Hydra's own node) as flat MLflow params."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    return {key: str(value)[:MAX_PARAM_LENGTH] for key, value in flatten(tree).items()}


def local_artifact_location(tracking_uri: str, artifact_location: str) -> str | None:
    """An absolute file URI for the artifacts of experiments created in a local (sqlite) store,
    so artifacts land under outputs/ whatever the working directory of a later reader."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    return Path(artifact_location).resolve().as_uri()


def make_logger(cfg: DictConfig, tags: dict[str, str], run_id: str | None = None) -> MLFlowLogger:
    """The Lightning MLflow logger of this run (a new run, or `run_id` to continue one). The store
    and the experiment are made here, safely across processes (rlx.store): the logger would
    otherwise create them on first use, racing any run started at the same moment."""
    log_cfg = cfg.logger
    artifact_location = local_artifact_location(log_cfg.tracking_uri, log_cfg.artifact_location)
    if run_id is None:
        ensure_experiment(log_cfg.tracking_uri, log_cfg.experiment_name, artifact_location)
    return MLFlowLogger(
        experiment_name=log_cfg.experiment_name,
        run_name=cfg.run_name,
        tracking_uri=log_cfg.tracking_uri,
        tags=tags if run_id is None else None,
        artifact_location=artifact_location,
        run_id=run_id,
        log_model=False,
        # asynchronous: metrics are queued and written by MLflow's background thread, off the
        # training loop (flush_metrics waits for them at checkpoints and at the end of a run)
        synchronous=log_cfg.synchronous,
    )


def flush_metrics(logger) -> None:
    """Block until every metric the logger queued asynchronously is in the store (a no-op for
    synchronous logging)."""
    if logger is None:
        return
    # MlflowClient has no public flush; the queue lives on its store (the one for this tracking URI)
    store = getattr(getattr(logger.experiment, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "flush_async_logging"):
        store.flush_async_logging()


def run_tags(cfg: DictConfig, sweep_id: str | None) -> dict[str, str]:
    """Tags that make runs easy to select: algorithm, base, precision, model, task, seed, sweep."""
    tags = {
        "algorithm": str(cfg.algorithm.name),
        "base": str(cfg.algorithm.base or cfg.algorithm.name),
        "precision": str(cfg.precision.name),
        "model": str(cfg.model.name),
        "task": str(cfg.task.name),
        "seed": str(cfg.seed),
    }
    if sweep_id:
        tags["sweep_id"] = sweep_id
    return tags


def ui_hint(logger: MLFlowLogger) -> str:
    """Where the run is and the command that opens it in the MLflow UI."""
    uri = logger._tracking_uri
    return (
        f"MLflow run {logger.run_id} (experiment '{logger._experiment_name}', id {logger.experiment_id}) "
        f"in {uri}\n"
        f"  open it: mlflow ui --backend-store-uri {uri}\n"
        f"  then:    http://127.0.0.1:5000/#/experiments/{logger.experiment_id}/runs/{logger.run_id}"
    )
