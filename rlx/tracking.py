"""MLflow conventions: one run per Hydra job, named after what it ran and described in a line;
flattened config as params; sweep tags, and a sweep's jobs nested under its parent run (rlx.sweep)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from rlx.store import CHARTS_VIEW_KEY, NOTE_TAG, ensure_experiment, store_lock

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


def quote_filter(value: str) -> str:
    """An MLflow filter-string literal (MLflow has no escapes: the quote kind not in `value`)."""
    return f"'{value}'" if "'" not in value else f'"{value}"'


# keys a run name always shows in its own way (algorithm, base, precision, seed) or never (the sweep id)
NAMED_KEYS = {"algorithm", "algorithm.name", "algorithm.base", "precision", "precision.name", "seed", "sweep_id"}


def override_pairs(overrides: Sequence[str]) -> dict[str, str]:
    """['+a.b=1', 'seed=2'] -> {'a.b': '1', 'seed': '2'} (Hydra's prefixes dropped)."""
    pairs = {}
    for text in overrides:
        key, sep, value = text.lstrip("+~").partition("=")
        if sep:
            pairs[key] = value.strip("'\"")
    return pairs


def run_name(cfg: DictConfig, swept: Sequence[str] = (), overrides: Sequence[str] = ()) -> str:
    """What ran, e.g. `repo_r+dapo-bf16-s2`: the algorithm, `+base` when a regulator sits on a base,
    the precision unless fp32, each other swept key's value (`zeta_max=0.5` for a key, the choice
    for a config group), and the seed. `run_name=` in the config wins."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    parts = [str(cfg.algorithm.name) + (f"+{cfg.algorithm.base}" if cfg.algorithm.get("base") else "")]
    if str(cfg.precision.name) != "fp32":
        parts.append(str(cfg.precision.name))
    values = override_pairs(overrides)
    for key in swept:
        if key in NAMED_KEYS or key.startswith("hydra"):
            continue
        value = values.get(key)
        if value is None:
            selected = OmegaConf.select(cfg, key, default=None)
            value = None if OmegaConf.is_config(selected) else selected
        if value is not None:
            parts.append(str(value) if "." not in key and OmegaConf.is_config(cfg.get(key)) else
                         f"{key.rsplit('.', 1)[-1]}={value}")
    parts.append(f"s{cfg.seed}")
    return "-".join(parts)[:250]


def run_description(cfg: DictConfig, overrides: Sequence[str] = (), sweep_id: str | None = None) -> str:
    """The run's description (Markdown, MLflow's note): algorithm, task, model, the overrides."""
    alg = cfg.algorithm
    what = f"**{alg.name}**" + (f" (entropy regulator on base objective {alg.base})" if alg.get("base") else "")
    text = (f"{what} on task `{cfg.task.name}`, model `{cfg.model.name}`, precision {cfg.precision.name}, "
            f"seed {cfg.seed}, {cfg.trainer.max_steps} RL iterations.")
    shown = [o for o in overrides if not o.lstrip("+~").startswith(("hydra", "sweep_id="))]
    text += "\n\nOverrides: " + (f"`{' '.join(shown)}`" if shown else "none (the defaults of conf/config.yaml)")
    if sweep_id:
        text += f"\n\nSweep `{sweep_id}`."
    return text


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside a Hydra app, e.g. a test)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def experiment_description(cfg: DictConfig) -> str:
    """The description of an experiment rlx creates for a task."""
    return (f"rlx: RL runs on task `{cfg.task.name}`, one run per rlx-train job (named algorithm+base, "
            "precision, seed); a sweep is a parent run with its jobs nested under it. Key charts: "
            "`train/entropy`, `train/reward_mean`, `eval/pass_at_1`.")


def unique_name(client, experiment_id: str, name: str, sweep_id: str | None) -> str:
    """`name`, or `name-2`, `name-3`, ... when a run of the same sweep already has it."""
    if not sweep_id:
        return name
    base, n = name, 1
    while client.search_runs([experiment_id], f"tags.sweep_id = {quote_filter(sweep_id)} and "
                                              f"attributes.run_name = {quote_filter(name)}", max_results=1):
        n += 1
        name = f"{base}-{n}"
    return name


def hydra_sweep_dir() -> str | None:
    """The sweep directory of the Hydra multirun this job belongs to (None outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(HydraConfig.get().sweep.dir)
    return None


def create_run(cfg: DictConfig, tags: dict[str, str]) -> str:
    """Create this job's MLflow run and return its id: named (run_name), described (note), nested
    under its sweep's parent run when there is one (rlx.sweep), with a name unique in its sweep."""
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    from rlx.sweep import SWEPT_TAG, parent_for_job

    log_cfg = cfg.logger
    uri = str(log_cfg.tracking_uri)
    experiment_id = ensure_experiment(uri, str(log_cfg.experiment_name),
                                      local_artifact_location(uri, str(log_cfg.artifact_location)),
                                      description=experiment_description(cfg))
    sweep_id, overrides, tags = tags.get("sweep_id"), job_overrides(), dict(tags)
    with store_lock(uri):  # the parent lookup and the unique name see every job created before
        client = MlflowClient(uri)
        parent = parent_for_job(client, experiment_id, sweep_id, hydra_sweep_dir()) if sweep_id else None
        swept: list[str] = []
        if parent is not None:
            swept = [k for k in parent.data.tags.get(SWEPT_TAG, "").split(",") if k]
            tags.setdefault("mlflow.parentRunId", parent.info.run_id)
        tags.setdefault(NOTE_TAG, run_description(cfg, overrides, sweep_id))
        name = unique_name(client, experiment_id, run_name(cfg, swept, overrides), sweep_id)
        # MLflow's context tags too (user, source, git commit), as mlflow.start_run would add
        return client.create_run(experiment_id, run_name=name, tags=resolve_tags(tags)).info.run_id


def make_logger(cfg: DictConfig, tags: dict[str, str], run_id: str | None = None) -> MLFlowLogger:
    """The Lightning MLflow logger of this run (a new run, or `run_id` to continue one). The store,
    the experiment and the run are made here (create_run), safely across processes (rlx.store):
    the logger would otherwise create them on first use, racing any run started at the same moment."""
    log_cfg = cfg.logger
    artifact_location = local_artifact_location(log_cfg.tracking_uri, log_cfg.artifact_location)
    if run_id is None:
        run_id = create_run(cfg, tags)
    return MLFlowLogger(
        experiment_name=log_cfg.experiment_name,
        tracking_uri=log_cfg.tracking_uri,
        artifact_location=artifact_location,
        run_id=run_id,
        log_model=False,
        # asynchronous: metrics are queued and written by MLflow's background thread, off the
        # training loop (flush_metrics waits for them at checkpoints and at the end of a run)
        synchronous=log_cfg.synchronous,
    )


# per-iteration counts, the same every iteration of a healthy run: their totals go on the run as
# summary tags at the end (summary_tags), not one line chart each
COUNTERS = ("train/optimizer_steps", "train/nonfinite_skips")


def split_counters(metrics: dict[str, float], totals: dict[str, float]) -> dict[str, float]:
    """`metrics` without the COUNTERS, whose values are added to `totals` (changed in place)."""
    for key in COUNTERS:
        if key in metrics:
            totals[key] = totals.get(key, 0.0) + metrics[key]
    return {k: v for k, v in metrics.items() if k not in COUNTERS}


def summary_tags(summary: dict[str, float], totals: dict[str, float]) -> dict[str, str]:
    """A run's one-off values as tags (exact text of the float), e.g. `summary/entropy_pred_meas_corr`
    and the counters' totals `summary/optimizer_steps`, `summary/nonfinite_skips`."""
    tags = {key: repr(float(value)) for key, value in summary.items()}
    tags.update({"summary/" + key.split("/", 1)[1]: repr(float(v)) for key, v in totals.items()})
    return tags


def flush_metrics(logger) -> None:
    """Block until every metric the logger queued asynchronously is in the store (a no-op for
    synchronous logging)."""
    if logger is None:
        return
    # MlflowClient has no public flush; the queue lives on its store (the one for this tracking URI)
    store = getattr(getattr(logger.experiment, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "flush_async_logging"):
        store.flush_async_logging()


def logged_metric_steps(client, run_id: str) -> set[tuple[str, int]]:
    """Every (metric key, step) the run has in the store: what a resumed run must not log again."""
    logged = set()
    for key in client.get_run(run_id).data.metrics:
        logged.update((key, m.step) for m in client.get_metric_history(run_id, key))
    return logged


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


def mlflow_command() -> str:
    """A command that starts MLflow's UI whether or not the venv is activated: the `mlflow` script
    next to this Python when it is there, else `python -m mlflow`."""
    script = Path(sys.executable).with_name("mlflow")
    return shlex.quote(str(script)) if script.exists() else f"{shlex.quote(sys.executable)} -m mlflow"


def charts_url(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The experiment's metric charts in the MLflow UI, in model-training mode, through rlx's saved
    view (rlx.store.charts_view_state: entropy and reward first)."""
    return (f"{server}/#/experiments/{experiment_id}/runs?viewStateShareKey={CHARTS_VIEW_KEY}"
            "&compareRunsMode=CHART&workflowType=machine_learning")


def ui_hint(logger: MLFlowLogger) -> str:
    """Where the run is and the command that opens it in the MLflow UI."""
    uri = logger._tracking_uri
    run = logger.experiment.get_run(logger.run_id)
    return (
        f"MLflow run '{run.info.run_name}' ({logger.run_id}) in experiment '{logger._experiment_name}' "
        f"(id {logger.experiment_id}), store {uri}\n"
        f"  open it: {mlflow_command()} ui --backend-store-uri {shlex.quote(uri)}\n"
        f"  then:    http://127.0.0.1:5000/#/experiments/{logger.experiment_id}/runs/{logger.run_id}\n"
        f"  charts:  {charts_url(logger.experiment_id)}"
    )
