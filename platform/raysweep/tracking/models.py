"""A trial's model logged with MLflow's PyTorch flavor (and registered)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch


@contextlib.contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API pointed at `uri` for a moment, then back as it was.

    `mlflow.set_tracking_uri` also writes MLFLOW_TRACKING_URI into this process's
    environment (MLflow 3): left there, every later MLflow client of the process, and every
    child process (a user's next `raysweep` call from a notebook, a test's subprocess),
    would log to this search's store.
    """
    import mlflow

    before_env, before_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_uri)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def log_pytorch_model(
    uri: str,
    run_id: str,
    task: Any,
    params: dict,
    state: dict,
    seed: int,
    registered_name: str | None = None,
    version_tags: dict[str, Any] | None = None,
    example: Any = None,
) -> str:
    """Log the checkpoint's model with MLflow's PyTorch flavor and an input example; its URI.

    `task`: a resolved task that can rebuild its model (tasks.contract, `rebuild`).
    `example`: a few preprocessed inputs (the spec's `data:`, ingest.TrialData.example);
    None: the task's own test split's. With `registered_name`, the model also becomes a new
    version of that registered model, tagged with `version_tags` (e.g. its test metrics)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np

    from ..tasks.contract import example_inputs

    model = task.load_model(params, state)
    example = np.asarray(example, dtype=np.float32) if example is not None else example_inputs(task, params, seed)
    with using_tracking_uri(uri):
        # The fluent API logs to the active run; the caller ends the run with its own status.
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=example,
                registered_model_name=registered_name,
                # Pinned to what trained it, not inferred (inference loads the model in a subprocess).
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
    version = getattr(info, "registered_model_version", None)
    if registered_name and version is not None:
        client = mlflow.MlflowClient(uri)
        for key, value in (version_tags or {}).items():
            client.set_model_version_tag(registered_name, str(version), key, str(value))
    return info.model_uri


def log_task_model(uri: str, run_id: str, task: str, params: dict, state: dict, seed: int, **registry) -> str:
    """`log_pytorch_model` of a task given by its spec name: what the spool replays (spool.py
    is handed this function, so the outage layer imports no task or model code)."""
    from ..tasks import resolve_task

    return log_pytorch_model(uri, run_id, resolve_task(task), params, state, seed, **registry)
