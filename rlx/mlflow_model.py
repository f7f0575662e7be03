"""The exported policy directory (rlx.export) logged to its MLflow run as a model.

MLflow's transformers flavour logs a pipeline and does not read a local checkpoint of the
installed transformers release, so the directory is logged as a pyfunc model: the directory is
its artifact `policy`, rlx/policy_pyfunc.py its code (transformers and mlflow only). The UI lists
it among the run's and the experiment's logged models; `export.register_as=<name>` also
registers it in the model registry. The files themselves are at
<artifact location>/models/<model id>/artifacts/artifacts/policy/ (a plain transformers directory).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

MODEL_NAME = "policy"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
PYFUNC_CODE = Path(__file__).with_name("policy_pyfunc.py")


def requirements(with_peft: bool) -> list[str]:
    """The pinned packages a loader needs (given, so MLflow does not infer them: that is slow)."""
    import importlib.metadata

    names = ["torch", "transformers"] + (["peft"] if with_peft else [])
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in names]


@contextmanager
def using(tracking_uri: str):
    """MLflow's fluent API pointed at `tracking_uri` for a while, then exactly as before: its global
    URI and the MLFLOW_TRACKING_URI variable, which mlflow.set_tracking_uri also sets (a later
    config reading ${oc.env:MLFLOW_TRACKING_URI} must not see this run's store)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous_uri, previous_env = utils._tracking_uri, os.environ.get(TRACKING_ENV)
    previous_bar = os.environ.get(PROGRESS_BAR)
    mlflow.set_tracking_uri(tracking_uri)
    os.environ[PROGRESS_BAR] = "false"  # no "Downloading artifacts" bar in the run's output
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        for name, value in ((TRACKING_ENV, previous_env), (PROGRESS_BAR, previous_bar)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_policy_model(tracking_uri: str, run_id: str, model_dir: str | Path, register_as: str | None = None) -> str:
    """Log `model_dir` to the MLflow run `run_id` as the pyfunc model "policy" (registered as
    `register_as` when given); returns its models:/ URI. The run keeps its status."""
    import mlflow
    from mlflow.tracking import MlflowClient

    model_dir = Path(model_dir)
    client = MlflowClient(tracking_uri)
    status = client.get_run(run_id).info.status
    with using(tracking_uri), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(PYFUNC_CODE),
                                       artifacts={"policy": str(model_dir)},
                                       pip_requirements=requirements((model_dir / "adapter").exists()),
                                       registered_model_name=register_as or None)
    if status == "RUNNING":  # start_run's end set it FINISHED
        client.update_run(run_id, status="RUNNING")
    else:
        client.set_terminated(run_id, status)
    return info.model_uri
