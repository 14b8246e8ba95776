"""A trial's model out of its checkpoint: test metrics, and MLflow's PyTorch flavor."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from .context import load_state


def checkpoint_state(checkpoint) -> dict:
    """The state dict saved with a trial's Ray checkpoint (loaded with weights_only=True), for
    its test metrics and logged model: its `model` is the best epoch's weights when the loop
    kept them (`metric: val_loss_best`, loop.fit), else the checkpoint's own."""
    with checkpoint.as_directory() as directory:
        return best_epoch_state(load_state(directory))


def best_epoch_state(state: dict) -> dict:
    if "best_model" not in state:
        return state
    return {**state, "model": state["best_model"], "epoch": state["best_epoch"]}


def can_rebuild(task: Any, data: Any = None) -> bool:
    """Whether a task can turn a checkpoint back into a model (built-in and SupervisedTask
    ones) and has input examples for it: its own splits, or the spec's `data:`."""
    return hasattr(task, "load_model") and (data is not None or hasattr(task, "splits"))


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

    `example`: a few preprocessed inputs (the spec's `data:`, ingest.TrialData.example);
    None: the task's own test split's. With `registered_name`, the model also becomes a new
    version of that registered model, tagged with `version_tags` (e.g. its test metrics)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np

    model = task.load_model(params, state)
    if example is not None:
        example = np.asarray(example, dtype=np.float32)
    else:
        # splits_for: a task whose data comes from its config (tabular) needs the params to find it.
        splits = task.splits_for(params, seed) if hasattr(task, "splits_for") else task.splits(seed)
        example = splits.test[0][:5].numpy()
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
