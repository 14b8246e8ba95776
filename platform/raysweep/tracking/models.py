"""A trial's model logged with MLflow's PyTorch flavor (and registered)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from typing import Any


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


def pip_requirements() -> list[str]:
    # Pinned to what trained it, not inferred (inference loads the model in a subprocess).
    import torch  # in the functions: the tracker imports this module before Ray starts (docs/design.md, point 38)

    return [f"torch=={torch.__version__.split('+')[0]}"]


def pytorch_flavor():
    """`mlflow.pytorch`, imported without what its import does to logging: it calls
    `logging.basicConfig(level=logging.ERROR)` (MLflow 3.17, `mlflow/pytorch/_lightning_autolog.py`),
    and the root logger at ERROR dropped every warning raysweep logs for the rest of the process
    (MLflow unreachable or its disk full: spooling; `raysweep sync` to run later)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    module = importlib.import_module("mlflow.pytorch")
    root.setLevel(level)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    return module


def warm_up() -> None:
    """Do ahead what `log_pytorch_model` does once per process before it writes anything:
    import MLflow's PyTorch flavor, export a tiny model (MLflow saves the model as pt2, through
    `torch.export` and `torch._dynamo`), and map installed packages to check the pinned
    requirements against. About 3 s on a 2-core machine (docs/design.md, point 20), spent in a
    thread while the trials train instead of after the last one. Errors wait for the real call."""
    try:
        # GitPython: MLflow tags a logged model with the source's git commit.
        pytorch_flavor()
        importlib.import_module("git")
        import torch

        # torch.export imports its tracer (torch._dynamo, 2-3 s) on the first export only.
        torch.export.export(torch.nn.Linear(1, 1), (torch.zeros(1, 1),))
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        warn_dependency_requirement_mismatches(pip_requirements())
    except Exception:  # noqa: BLE001 - log_pytorch_model meets and reports the same error
        logging.getLogger(__name__).debug("warming up model logging failed", exc_info=True)


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
    version of that registered model, created with `version_tags` (e.g. its test metrics and
    what it was built from: a driver killed right after can tell it registered it)."""
    import mlflow
    import numpy as np

    from ..tasks.contract import example_inputs

    flavor = pytorch_flavor()

    model = task.load_model(params, state)
    example = np.asarray(example, dtype=np.float32) if example is not None else example_inputs(task, params, seed)
    with using_tracking_uri(uri):
        # The fluent API logs to the active run; the caller ends the run with its own status.
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = flavor.log_model(
                model,
                name="model",
                input_example=example,
                pip_requirements=pip_requirements(),
            )
        if registered_name:  # the version and its tags in one write (they were one write each)
            mlflow.register_model(info.model_uri, registered_name,
                                  tags={key: str(value) for key, value in (version_tags or {}).items()})
    return info.model_uri


def log_task_model(uri: str, run_id: str, task: str, params: dict, state: dict, seed: int, **registry) -> str:
    """`log_pytorch_model` of a task given by its spec name: what the spool replays (spool.py
    is handed this function, so the outage layer imports no task or model code)."""
    from ..tasks import resolve_task

    return log_pytorch_model(uri, run_id, resolve_task(task), params, state, seed, **registry)
