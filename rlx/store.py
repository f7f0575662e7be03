"""Prepare the MLflow store: created and migrated once, safely across processes.

MLflow creates a new sqlite store (tables, schema migrations, the Default experiment) in
whichever process opens it first, and two processes that open it at the same moment race: one
of them fails ("table ... already exists", "Online migration expected to match one row"). Two
processes creating the same experiment at once race the same way (a unique-constraint error).
Here both happen under an exclusive file lock (``<db>.lock`` next to the database), so any number
of runs (plain, or the jobs of a parallel sweep) may start together on a new or existing store.
Other stores (a tracking server, postgres, ...) are left to the server / database: no lock.
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (query string dropped), else None
    (another scheme, or an in-memory database)."""
    m = re.match(r"^sqlite:///([^?]*)", uri)
    if not m or m.group(1) in ("", ":memory:"):
        return None
    return Path(m.group(1))


def lock_path(db: Path) -> Path:
    """The lock file of a sqlite store: ``<db>.lock`` next to it."""
    return db.with_name(db.name + ".lock")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive, cross-process lock on the sqlite store at ``uri`` (blocks until free);
    a no-op for any other store. The lock is released when the block ends or the process dies."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path(db), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# MLflow's experiment-kind tag: the UI opens an experiment of this kind as model training (runs,
# metric charts), not as a GenAI app (traces, judges, prompts).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description shown at the top of an experiment or run


# A saved view of the experiment's runs page (MLflow 3.x UI: the views menu, and the URL parameter
# `viewStateShareKey=<key>`), stored as the experiment tag `mlflow.sharedViewState.<key>` holding
# {"name", "createdAt", "updatedAt", "state": <the page state as a JSON string>}. rlx's view opens the
# charts with entropy and reward first, in a section of their own; the UI adds every other metric
# below it, one section per prefix (train/, eval/, ...). Without the key the UI's own default is
# every metric alphabetically, one section per prefix, sections alphabetically (train/ last).
# The format is the one MLflow 3.17's UI writes and reads (the views menu); a UI without saved
# views ignores the tag.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
CHARTS_VIEW_KEY = "rlx-charts"
CHARTS_VIEW_NAME = "rlx: entropy and reward first"
KEY_CHARTS = ("train/entropy", "train/reward_mean", "train/entropy_change_pct", "eval/pass_at_1",
              "eval/pass_at_k/16", "control/zeta", "control/eps_high", "train/clipfrac_high")
_KEY_SECTION = "rlx-key-charts"


def _line_chart(metric: str) -> dict:
    """One line-chart card of the runs page, as the UI writes it (a metric against the step)."""
    return {"uuid": "rlx-" + re.sub(r"[^a-z0-9]+", "-", metric), "type": "LINE", "metricKey": metric,
            "displayName": metric, "metricSectionId": _KEY_SECTION, "isGenerated": True, "deleted": False,
            "runsCountToCompare": 10, "lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear",
            "range": {}, "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
            "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True,
            "useGlobalLineSmoothing": True}


def charts_view_state(metrics: tuple[str, ...] = KEY_CHARTS) -> dict:
    """The runs-page state of rlx's saved view: `metrics` as line charts, in this order, in the
    first section; sections keep their order (isAccordionReordered) and empty charts are hidden
    (a regulator's control/* only where it ran)."""
    return {"compareRunCharts": [_line_chart(m) for m in metrics],
            "compareRunSections": [{"uuid": _KEY_SECTION, "name": "Entropy and reward", "display": True,
                                    "isReordered": False, "deleted": False, "isGenerated": False}],
            "isAccordionReordered": True, "hideEmptyCharts": True}


def charts_view_tag(now_ms: int | None = None) -> tuple[str, str]:
    """(tag key, value) of rlx's saved charts view: the envelope the MLflow UI reads."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = json.dumps({"name": CHARTS_VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms,
                        "state": json.dumps(charts_view_state())})
    return SHARED_VIEW_TAG_PREFIX + CHARTS_VIEW_KEY, value


def experiment_tags(description: str | None = None) -> dict[str, str]:
    """The tags of an experiment rlx creates: the training kind, rlx's charts view, and a
    description if given."""
    view_key, view = charts_view_tag()
    tags = {EXPERIMENT_KIND_TAG: TRAINING_KIND, view_key: view}
    if description:
        tags[NOTE_TAG] = description
    return tags


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None,
                      description: str | None = None) -> str:
    """The id of experiment ``name`` in the store at ``uri``: the store is created and migrated
    if needed and the experiment created if missing (with ``artifact_location``, the training
    experiment kind, rlx's charts view and ``description``), both under the store's lock, so
    concurrent callers all get the one store and the one experiment. An existing experiment
    without a kind or the view gets them (a view the user edited in the UI is left as it is)."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)  # opening the store creates / migrates it
        if experiment is None:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags=experiment_tags(description))
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        if SHARED_VIEW_TAG_PREFIX + CHARTS_VIEW_KEY not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, *charts_view_tag())
        if description and NOTE_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, description)
        return experiment.experiment_id
