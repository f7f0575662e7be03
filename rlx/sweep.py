"""A sweep is a parent MLflow run: every `--multirun` (and ./multirun.sh) sweep gets one run that
holds the sweep's command line and config, and each job's run nests under it.

A Hydra callback (`SweepParentRun`, registered in conf/config.yaml under hydra.callbacks), in
the process that launches the sweep, writes the sweep's plan (command line, swept keys, config)
into the sweep directory before any job starts. The parent run itself is made by the first job
whose config passes validation, when it creates its own run (rlx.tracking.create_run): a sweep
whose every job has a bad config leaves no MLflow run at all, like a single bad run. The parent
is keyed by the sweep id (`sweep_id=...`, else the sweep directory) in the tag
`rlx.sweep_parent`; every job, in whatever process or machine a launcher puts it (joblib,
submitit), finds it by that tag and sets `mlflow.parentRunId`. The parent carries no `sweep_id`
tag, so rlx-compare --sweep-id selects only the jobs; it puts its table and plots on the parent
instead. Finding or creating the parent happens under the sqlite store's lock (rlx.store), so
jobs starting together never make two parents for one id.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

PLAN_FILE = "rlx_sweep_plan.json"  # in the sweep directory: what the parent run records
PARENT_TAG = "rlx.sweep_parent"   # on the parent run: the sweep id it stands for
SWEPT_TAG = "rlx.swept_keys"      # on the parent run: the keys the sweep varies (comma-separated)
SWEEP_TAG = "sweep_id"            # on each job's run


def swept_keys(overrides: Iterable[str], sweeper_params: dict | None = None) -> list[str]:
    """The keys a sweep varies: command-line overrides with several values (`seed=0,1`,
    `seed=range(3)`, `model=choice(a,b)`), plus the keys a search sweeper samples (Optuna's
    hydra.sweeper.params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    keys += [str(k) for k in (sweeper_params or {}) if str(k) not in keys]
    return keys


def sweep_id_of_master(config: DictConfig) -> str:
    """The sweep id as the jobs will see it (rlx.build.sweep_id_of): `sweep_id`, else the sweep dir."""
    return str(config.sweep_id) if config.get("sweep_id") else str(config.hydra.sweep.dir)


def find_parent(client, sweep_id: str):
    """The parent run of sweep `sweep_id` in any experiment of the store, or None."""
    from rlx.tracking import quote_filter

    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return None
    runs = client.search_runs(experiment_ids, f"tags.`{PARENT_TAG}` = {quote_filter(sweep_id)}", max_results=1)
    return runs[0] if runs else None


def job_config_yaml(config: DictConfig) -> str:
    """The sweep's base config without Hydra's own node, resolved where it can be."""
    container = OmegaConf.to_container(config, resolve=False)
    container.pop("hydra", None)
    job = OmegaConf.create(container)
    try:
        return OmegaConf.to_yaml(job, resolve=True)
    except Exception:  # an interpolation that only a job can resolve
        return OmegaConf.to_yaml(job)


def sweep_description(sweep_id: str, overrides: list[str], swept: list[str]) -> str:
    """The parent run's description (Markdown, shown at the top of the run page)."""
    command = "rlx-train --multirun " + " ".join(overrides)
    varied = ", ".join(f"`{k}`" for k in swept) or "nothing"
    return (f"Sweep `{sweep_id}`: `{command}`\n\nVaries {varied}; one child run per job, named after "
            "what it ran. `rlx-compare --sweep-id " + sweep_id + "` puts its table and plots here.")


def sweep_plan(config: DictConfig) -> dict:
    """What the parent run records, from the sweep's master config: the sweep id, the command-line
    overrides, the swept keys and the base config (YAML)."""
    overrides = list(config.hydra.overrides.task)
    params = config.hydra.sweeper.get("params")
    swept = swept_keys(overrides, OmegaConf.to_container(params) if OmegaConf.is_config(params) else params)
    return {"sweep_id": sweep_id_of_master(config), "overrides": overrides, "swept": swept,
            "config_yaml": job_config_yaml(config)}


def write_plan(config: DictConfig) -> Path:
    """The sweep's plan as JSON in its sweep directory (where every job of the sweep can read it)."""
    path = Path(str(config.hydra.sweep.dir)) / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sweep_plan(config)))
    return path


def read_plan(sweep_dir: str | Path) -> dict | None:
    """The plan write_plan left in sweep_dir (None when there is none)."""
    path = Path(sweep_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def parent_for_job(client, experiment_id: str, sweep_id: str, sweep_dir: str | None):
    """The parent run of a job of sweep `sweep_id`: found by its tag (set RUNNING again when a
    sweep id is reused), or made from the plan in the job's sweep directory. None for a job
    outside a planned sweep. Call it under the store lock (rlx.store.store_lock)."""
    parent = find_parent(client, sweep_id)
    if parent is not None:
        if parent.info.status != "RUNNING":
            client.update_run(parent.info.run_id, status="RUNNING")
        return parent
    plan = read_plan(sweep_dir) if sweep_dir else None
    if plan is None or plan["sweep_id"] != sweep_id:
        return None
    return create_parent(client, experiment_id, plan)


def create_parent(client, experiment_id: str, plan: dict):
    """The sweep's parent run (RUNNING), with the sweep's overrides as `sweep.*` params and its
    config as the artifact config/sweep.yaml."""
    from rlx.store import NOTE_TAG

    sweep_id, overrides, swept = plan["sweep_id"], plan["overrides"], plan["swept"]
    tags = {PARENT_TAG: sweep_id, SWEPT_TAG: ",".join(swept), "rlx.kind": "sweep",
            NOTE_TAG: sweep_description(sweep_id, overrides, swept)}
    run = client.create_run(experiment_id, run_name=sweep_run_name(sweep_id), tags=tags)
    run_id = run.info.run_id
    params: dict[str, str] = {}  # a key given twice (a sweep's default and the user's override): the last wins, as in Hydra
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        params[f"sweep.{key}"] = value[:6000]
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.log_text(run_id, plan["config_yaml"], "config/sweep.yaml")
    return client.get_run(run_id)


def sweep_run_name(sweep_id: str) -> str:
    """`sweep <name>`: the last part of the sweep id (multirun.sh's `demo-20260101-120000`, or the
    time of a sweep directory `.../2026-01-01/12-00-00`)."""
    parts = [p for p in sweep_id.replace("\\", "/").split("/") if p]
    tail = "/".join(parts[-2:]) if len(parts) > 1 and "multirun" in parts else (parts[-1] if parts else sweep_id)
    return f"sweep {tail}"


def close_parent(uri: str, sweep_id: str, status: str) -> None:
    """End the sweep's parent run, if a job made one, with `status` (FINISHED, or FAILED when the
    sweep did not finish)."""
    from mlflow.tracking import MlflowClient

    from rlx.preflight import sqlite_path

    database = sqlite_path(uri)
    if database is not None and not database.exists():
        return  # no job made a run: opening the store would create one
    client = MlflowClient(uri)
    parent = find_parent(client, sweep_id)
    if parent is not None:
        client.set_terminated(parent.info.run_id, status=status)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep the module importable anyway
    Callback = object


class SweepParentRun(Callback):
    """Hydra callback: writes the sweep's plan before the jobs start (the first valid job makes the
    parent run from it) and ends the parent after them (FAILED if the sweep process exits before
    the end: a job's error, a signal)."""

    def __init__(self) -> None:
        self.sweep_id: str | None = None
        self.uri = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.logger.get("enabled", True):
            return
        write_plan(config)
        self.sweep_id, self.uri = sweep_id_of_master(config), str(config.logger.tracking_uri)
        atexit.register(self._fail_if_open)
        print(f"rlx: sweep {self.sweep_id}: its runs nest under one parent MLflow run")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_id is not None:
            close_parent(self.uri, self.sweep_id, "FINISHED")
            self.sweep_id = None

    def _fail_if_open(self) -> None:
        if self.sweep_id is not None:
            close_parent(self.uri, self.sweep_id, "FAILED")
            self.sweep_id = None
