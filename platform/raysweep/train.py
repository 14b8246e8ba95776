"""`raysweep train`: one training run at a fixed configuration (no search).

For training a search's winner at full scale: same task, same metric names, same Ray paths
(in-process for one worker, a `TorchTrainer` for more), logged as one MLflow run whose final
model is stored with MLflow's PyTorch flavor.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console

from .book import FAILED, TrialBook
from .distributed import slow_poll_warning
from .models import can_rebuild, checkpoint_state, log_pytorch_model
from .progress import RunProgress, make_console
from .files import check_data
from .interrupt import Interrupt, Interrupted
from .search import (INTERRUPTED_TAG, RunFailed, build_tuner, data_kwargs, end_running_killed, ensure_ray, load_data,
                     quiet_libraries, wait_for_capacity)
from .storage import resolve as storage_location
from .spec import Choice, IntParam, LogUniform, Spec, SpecError
from .tasks import resolve_task
from .tracking import MLflowCallback, Tracker, resolve_tracking_uri


class TrainFailed(RunFailed):
    """The training run raised or never reported its metric."""


@dataclass
class TrainResult:
    name: str
    run_id: str | None
    params: dict[str, Any]
    epochs: int
    metrics: dict[str, float]
    test_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    wall_s: float = 0.0
    tracking_uri: str | None = None
    status: str = "finished"  # or "failed", "interrupted" (Ctrl-C)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_value(param) -> Any:
    """A space parameter's value when `train` is not given one: the middle of its range."""
    if isinstance(param, Choice):
        return param.values[0]
    if isinstance(param, LogUniform):
        return math.sqrt(param.low * param.high)
    if isinstance(param, IntParam):
        mid = (param.low + param.high) / 2 if not param.log else math.sqrt(param.low * param.high)
        return int(param.low + round((mid - param.low) / param.step) * param.step)
    return (param.low + param.high) / 2


def train_params(spec: Spec, values: dict[str, Any]) -> dict[str, Any]:
    """Fixed hyperparameters, then each space parameter's given value or default."""
    unknown = sorted(set(values) - set(spec.space) - set(spec.fixed))
    if unknown:
        known = ", ".join([*spec.space, *spec.fixed])
        raise SpecError(f"--set {unknown[0]}: not a hyperparameter of this spec (known: {known})")
    for name, value in values.items():
        if name in spec.space:
            _check_value(name, spec.space[name], value)
    space = {name: values.get(name, default_value(p)) for name, p in spec.space.items()}
    return {**spec.fixed, **{k: v for k, v in values.items() if k in spec.fixed}, **space}


def _check_value(name: str, param, value: Any) -> None:
    """A value of the parameter's kind; outside its search range is fine (training at full scale)."""
    if isinstance(param, IntParam):
        kind, ok = "an integer", isinstance(value, int)
    elif isinstance(param, Choice):
        kind, ok = "a number, string or boolean", isinstance(value, (int, float, str))
    else:
        kind, ok = "a number", isinstance(value, (int, float))
    if not ok or (isinstance(value, bool) and not isinstance(param, Choice)):
        raise SpecError(f"--set {name}: must be {kind} (space.{name} is {param.type}), got {value!r}")


def run_training(
    spec: Spec,
    params: dict[str, Any],
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    verbose: bool = False,
    console: Console | None = None,
) -> TrainResult:
    started = time.monotonic()
    console = console or make_console()
    if not verbose:
        quiet_libraries()
    task = resolve_task(spec.task)
    data_info = check_data(spec.data) if spec.data is not None else None
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri) if spec.tracking.enabled else None
    tracker = Tracker(uri, spec.experiment) if uri else None
    storage = storage_location(storage)
    book = TrialBook(spec, storage)
    interrupt = Interrupt()
    book.interrupt = interrupt
    callbacks: list = [book, interrupt]  # the book first: resume.py reads its state as callback 0
    mlflow_callback = None
    if tracker is not None:
        mlflow_callback = MLflowCallback(tracker, book, None, spec, lambda config: config)
        callbacks.append(mlflow_callback)
    if not verbose:
        callbacks.append(RunProgress(book, console))
    callbacks += slow_poll_warning(spec, task, console)
    ensure_ray(log_to_driver=verbose)
    wait = wait_for_capacity(spec, task, console)  # a cluster that can never hold the run: exit 2
    with interrupt:
        data = load_data(spec, data_info, console, verbose)
        try:
            build_tuner(spec, storage, callbacks, verbose, fixed_config=params, data=data, stop=wait).fit()
        except KeyboardInterrupt:  # a second Ctrl-C: the run still ends KILLED, then exit at once
            if tracker is not None:
                end_running_killed(book, tracker, mlflow_callback, {INTERRUPTED_TAG: "true"})
            raise
        rec = next(iter(book.records.values()), None)  # None: stopped before the trial started
        result = TrainResult(spec.name, rec and rec.run_id, params, rec.epochs if rec else 0,
                             dict(rec.metrics) if rec else {}, tracking_uri=uri)
        if interrupt.after_fit():
            result.status, result.wall_s = "interrupted", round(time.monotonic() - started, 3)
            if tracker is not None:
                end_running_killed(book, tracker, mlflow_callback, {INTERRUPTED_TAG: "true"})
            raise Interrupted(f"interrupted after {result.epochs} of {spec.max_epochs} epochs", result)
        if wait is not None and wait.failure is not None:
            result.status = "failed"
            raise TrainFailed(wait.failure, result)
        if rec.status == FAILED or rec.value is None:
            result.status = "failed"
            raise TrainFailed(rec.error or f"the run reported no finite {spec.metric!r}", result)
        try:
            _conclude(spec, task, rec, result, tracker, data)
        except Exception as exc:  # the trained run stays: its run ends FAILED with the reason
            result.status = "failed"
            error = f"after training: {type(exc).__name__}: {' '.join(str(exc).split())}"
            if tracker is not None:
                tracker.end_run(rec.run_id, "FAILED", {"raysweep.error": error[:5000]})
            raise TrainFailed(error, result) from exc
    result.wall_s = round(time.monotonic() - started, 3)
    return result


def _conclude(spec: Spec, task, rec, result: TrainResult, tracker: Tracker | None, data) -> None:
    """The trained model on the test split, logged with MLflow's PyTorch flavor; the run ended."""
    if rec.checkpoint is not None and can_rebuild(task, data):
        state = checkpoint_state(rec.checkpoint)
        result.test_metrics = task.evaluate(result.params, state, spec.seed, **data_kwargs(data))
        if tracker is not None:
            tracker.log_metrics(rec.run_id, result.test_metrics, step=rec.epochs)
            result.model_uri = log_pytorch_model(tracker.uri, rec.run_id, task, result.params, state, spec.seed,
                                                 example=None if data is None else data.example())
    if tracker is not None:
        tracker.end_run(rec.run_id, "FINISHED", {"raysweep.model_uri": result.model_uri or ""})
