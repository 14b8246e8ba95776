"""`raysweep train`: one training run at a fixed configuration (no search).

For training a search's winner at full scale: same task, same metric names, same Ray paths
(in-process for one worker, a `TorchTrainer` for more), logged as one MLflow run whose final
model is stored with MLflow's PyTorch flavor.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from .book import FAILED
from .errors import Interrupted, SpecError, TrainFailed
from .progress import RunProgress
from .runsetup import begin, data_kwargs, end_running_killed
from .spec import Choice, IntParam, LogUniform, Spec
from .tasks.contract import can_log_model, capabilities
from .tracking.names import ERROR_TAG, FROM_SEARCH_TAG, INTERRUPTED_TAG, MODEL_URI_TAG

if TYPE_CHECKING:  # MLflow loads as Ray starts, torch once it is up (docs/design.md, point 38)
    from .tracking.tracker import Tracker


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
    shutdown_ray: bool = False,
    from_search: str | None = None,
) -> TrainResult:
    """Train one configuration and log it as one MLflow run (the module's). `shutdown_ray` (what
    `raysweep train` does): a Ray this call starts is shut down once the run is trained and
    tested, while its model is logged. `from_search`: the parent run id of the search whose best
    configuration this is (`--from-search`), tagged on the run."""
    run = begin(spec, storage=storage, tracking_uri=tracking_uri, verbose=verbose, console=console,
                shutdown_ray=shutdown_ray)
    book, storage, console, uri, started = run.book, run.storage, run.console, run.uri, run.started
    interrupt = run.interrupt
    interrupt.saving = None  # nothing of a stopped run is resumed (its first Ctrl-C's line)
    with interrupt:  # Ctrl-C and SIGTERM are a stop from here on (interrupt.py), Ray's start included
        # The store opens while Ray starts; a cluster that can never hold the run: exit 2.
        run.start_ray(None if uri is None else lambda: _open_tracker(spec, uri))
        tracker = run.tracker
        with run.imports():  # torch, once Ray is up (docs/design.md, point 38)
            from .tuner import build_tuner, fit
        callbacks = run.callbacks(None, lambda config: config, RunProgress(book, console))
        task, mlflow_callback, wait = run.task, run.mlflow_callback, run.wait
        data = run.load_data()
        try:
            # As a search's round (tuner.fit): its trial in Ray's idle processes, in the working
            # directory; the book holds the run, Tune's ResultGrid is not read.
            fit(build_tuner(spec, storage, callbacks, verbose, fixed_config=params, data=data, stop=wait,
                            splits=run.shared_splits()))
        except KeyboardInterrupt:  # a second Ctrl-C: the run still ends KILLED, then exit at once
            if tracker is not None:
                end_running_killed(book, tracker, mlflow_callback, {INTERRUPTED_TAG: "true"})
            raise
        rec = next(iter(book.records.values()), None)  # None: stopped before the trial started
        if tracker is not None and from_search and rec is not None and rec.run_id:
            tracker.set_tags(rec.run_id, {FROM_SEARCH_TAG: from_search})
        result = TrainResult(spec.name, rec and rec.run_id, params, rec.epochs if rec else 0,
                             dict(rec.metrics) if rec else {}, tracking_uri=uri)
        if interrupt.after_fit():
            result.status, result.wall_s = "interrupted", round(time.monotonic() - started, 3)
            if tracker is not None:
                end_running_killed(book, tracker, mlflow_callback, {INTERRUPTED_TAG: "true"})
            stopped = Interrupted(f"interrupted after {result.epochs} of {spec.max_epochs} epochs", result)
            stopped.signum = interrupt.signum
            raise stopped
        if wait is not None and wait.failure is not None:
            result.status = "failed"
            raise TrainFailed(wait.failure, result)
        if rec.status == FAILED or rec.value is None:
            result.status = "failed"
            raise TrainFailed(rec.error or f"the run reported no finite {spec.rank_metric!r}", result)
        try:
            run.warmed_up()
            _conclude(spec, task, rec, result, tracker, data, ray_done=run.ray_done)
        except Exception as exc:  # the trained run stays: its run ends FAILED with the reason
            result.status = "failed"
            error = f"after training: {type(exc).__name__}: {' '.join(str(exc).split())}"
            if tracker is not None:
                tracker.end_run(rec.run_id, "FAILED", {ERROR_TAG: error[:5000]})
            raise TrainFailed(error, result) from exc
        finally:
            run.ray_shut_down()
    result.wall_s = round(time.monotonic() - started, 3)
    return result


def _open_tracker(spec: Spec, uri: str) -> Tracker:
    from .tracking.tracker import Tracker

    return Tracker(uri, spec.experiment)


def _conclude(spec: Spec, task, rec, result: TrainResult, tracker: Tracker | None, data,
              ray_done: Callable[[], None] = lambda: None) -> None:
    """The trained model on the test split, logged with MLflow's PyTorch flavor; the run ended.
    `ray_done` is called once nothing more needs Ray (a `data:` split is read through it)."""
    from .models import checkpoint_state
    from .tracking.models import log_pytorch_model

    evaluates, logs_model = capabilities(task).evaluate, can_log_model(task, data)
    state = None
    if rec.checkpoint is not None and (evaluates or logs_model):
        state = checkpoint_state(rec.checkpoint)
        if evaluates:
            result.test_metrics = task.evaluate(result.params, state, spec.seed, **data_kwargs(data))
    model_to_log = tracker is not None and state is not None and logs_model and spec.tracking.log_model
    example = None if data is None or not model_to_log else data.example()
    ray_done()
    if tracker is not None and state is not None:
        tracker.log_metrics(rec.run_id, result.test_metrics, step=rec.epochs)
        if model_to_log:
            result.model_uri = log_pytorch_model(tracker.uri, rec.run_id, task, result.params, state, spec.seed,
                                                 example=example)
    if tracker is not None:
        tracker.end_run(rec.run_id, "FINISHED", {MODEL_URI_TAG: result.model_uri or ""})
