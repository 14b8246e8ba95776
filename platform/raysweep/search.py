"""Spec -> Ray Tune search (Optuna TPE or random, ASHA or FIFO) -> `SearchResult`."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from .capacity import CapacityLimiter, CapacityWait, check as check_capacity, trial_need
from .book import FAILED, FINISHED, RUNNING, STOPPED, TrialBook
from .distributed import run_distributed, slow_poll_warning
from .failures import TRACKING
from .files import check_data
from .ingest import TrialData
from .interrupt import Interrupt, Interrupted
from .jobenv import working_dir
from .models import can_rebuild, checkpoint_state
from .plots import write_plots
from .progress import ProgressCallback, leaderboard, make_console
from .resume import check_resume, find_previous, mark_concluded, prior_points, round_name, seed_asha
from .space import build_sampler, optuna_space
from .spec import Spec, SpecError
from .spool import Spool, substitute
from .storage import join, resolve as storage_location
from .tasks import needs_ray_train, resolve_task
from .tracking import MLflowCallback, Tracker, resolve_tracking_uri, runs_url
from .trial import run_in_process, trial_params



class RunFailed(RuntimeError):
    """A search or training run failed (CLI exit code 1).

    `result` holds what it did record (the CLI still writes it as --summary-json).
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class SearchFailed(RunFailed):
    """No trial of the search produced a value of its metric, or its last steps failed."""


class TooManyFailures(SearchFailed):
    """`search.max_failed_trials` trials failed, so the search stopped before its end."""


@dataclass
class SearchResult:
    name: str
    experiment_id: str | None
    parent_run_id: str | None
    metric: str
    mode: str
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    epochs_run: int
    epochs_budget: int
    wall_s: float
    test_metrics: dict[str, float] = field(default_factory=dict)
    tracking_uri: str | None = None
    # device_hours, cost_usd, flops, samples, energy_j (None without a GPU), compute_saved_fraction
    totals: dict[str, float | None] = field(default_factory=dict)
    model_uri: str | None = None  # the best model, MLflow PyTorch flavor, registered
    error: str | None = None  # why the search failed or stopped (then `run_search` raises)
    status: str = "finished"  # or "failed" (SearchFailed), "interrupted" (Interrupted: Ctrl-C)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ui_url(self) -> str | None:
        if self.tracking_uri is None or self.experiment_id is None:
            return None
        return runs_url(self.tracking_uri, self.experiment_id)


def quiet_libraries() -> None:
    """Keep library chatter (schema migrations, study creation) out of the progress display."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # After a Ctrl-C Tune explains its own Tuner.restore API and that it could not read the
    # metrics of trials it stopped: raysweep says what happened and how to --resume instead.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis",
                 # "Token authentication is enabled" at every start: raysweep keeps it on (README)
                 "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Tune warns whenever checkpoints of short epochs force experiment snapshots; it says
    # nothing a user can act on for second-long trials.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's newer console output prints an experiment banner even at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # MLflow prints a "View run" link to stdout whenever a run on a server ends: one per
    # trial between the progress lines. raysweep prints the runs' link once, at the end.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Tune's own CSV and TensorBoard loggers: every epoch of every trial written twice more on
    # the driver, while the trial waits (MLflow has the metrics). Its result.json stays
    # (tune_callbacks); "0" brings the others back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def ensure_ray(log_to_driver: bool = True) -> bool:
    """Join the Ray cluster in $RAY_ADDRESS (set inside a `ray job submit` job), else start a local one.

    Returns whether this call started Ray. Tests share one instance, so an initialised
    Ray is left as it is. The dashboard stays on: Train V2 needs it to free finished
    trials' resources (docs/design.md, point 2).
    """
    if ray.is_initialized():
        return False
    # "local", not None: Ray would otherwise join whatever `ray start` cluster it last saw on
    # this machine (/tmp/ray/ray_current_cluster), even a dead one.
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    return True


def concurrency(spec: Spec, search_alg, data: TrialData | None = None) -> tuple:
    """The round's searcher and Tune's `max_concurrent_trials`.

    Without `search.max_concurrent`, trials run as many at once as the cluster holds now, and
    more as nodes join (capacity.CapacityLimiter). Data streamed from files by every trial (not
    read once, ingest.py) needs Ray Data tasks to read and preprocess it while trials run: a
    CPU is left free for them, and `search.max_concurrent` cannot go past that either, or
    trials holding every CPU would wait for batches no task can produce.
    """
    need, streamed = _need(spec, data)
    if spec.search.max_concurrent is not None and not streamed:
        return search_alg, spec.search.max_concurrent
    return CapacityLimiter(search_alg, need, spec.search.max_concurrent), None


def _need(spec: Spec, data: TrialData | None) -> tuple:
    """A trial's resources (capacity.Need), and whether it streams its data; refused if the
    data's read tasks would find no CPU beside the trial."""
    streamed = data is not None and not data.info.get("cached", False)
    need = trial_need(spec, needs_ray_train(spec, resolve_task(spec.task)), streamed)
    if streamed:
        check_capacity(need, cache=spec.data.cache)
    return need, streamed


def wait_for_capacity(spec: Spec, task, console: Console) -> CapacityWait | None:
    """Refuse a trial no node of a fixed cluster can hold (SpecError); on an autoscaling
    cluster not yet big enough, warn and return the stopper that gives up after
    `resources.scale_wait_s`."""
    need = trial_need(spec, needs_ray_train(spec, task))
    if check_capacity(need, say=lambda line: console.print(f"[yellow]{line}[/yellow]")):
        return CapacityWait(need, spec.resources.scale_wait_s)
    return None


def load_data(spec: Spec, info: dict | None, console: Console, verbose: bool) -> TrialData | None:
    """The spec's data: splits as Ray Datasets (ingest.py), read once here if they fit."""
    if spec.data is None:
        return None
    from ray.data import DataContext

    from .ingest import load

    # Ray Data's progress bars and execution-plan lines would interleave with raysweep's
    # progress line (its logs stay in Ray's session folder).
    DataContext.get_current().enable_progress_bars = verbose
    if not verbose:  # Ray Data's own console handler (its file handler keeps everything)
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.WARNING)
                # ... which would say, once, that the bars just turned off are off.
                handler.addFilter(lambda record: not str(record.msg).startswith("Progress bars disabled"))
    console.print(f"data: reading {spec.data.format} from {spec.data.train} ...")
    return load(spec.data, info, say=console.print)


def data_kwargs(data: TrialData | None) -> dict:
    """`evaluate`'s extra argument when the spec streams its data (tasks/__init__.py)."""
    return {} if data is None else {"data": data}


def tune_callbacks(callbacks: list) -> list:
    """A round's Tune callbacks: raysweep's, then the working-directory keeper and Tune's JSON
    result log (each trial's `result.json`, every report; the other loggers are off)."""
    from ray.tune.logger import JsonLoggerCallback

    return [*callbacks, KeepWorkingDir(), JsonLoggerCallback()]


class KeepWorkingDir(tune.Callback):
    """Re-enter the driver's working directory as trials start and end (jobenv.py)."""

    def _enter(self, *args, **info):
        working_dir()

    on_trial_start = on_trial_complete = on_trial_error = on_experiment_end = _enter


class StopAfterFailures(tune.Stopper):
    """Stops the whole search once `limit` trials have failed (search.max_failed_trials), or
    when an autoscaling cluster has not grown to hold a trial in time (`wait`); and a trial
    whose MLflow writes were refused (the book marked it failed: tracking.py).

    Reads the driver's `TrialBook`, which counts a trial only when Tune gives up on it.
    """

    def __init__(self, book: TrialBook, limit: int | None, wait: CapacityWait | None = None):
        self.book, self.limit, self.wait = book, limit, wait

    def __call__(self, trial_id: str, result: dict) -> bool:
        rec = self.book.records.get(trial_id)
        return rec is not None and rec.failure == TRACKING

    def stop_all(self) -> bool:
        if self.wait is not None and self.wait.stop_all():
            return True
        return self.limit is not None and self.book.counts()[FAILED] >= self.limit

    @property
    def failure(self) -> str | None:
        """Why the search stopped before its trials could run, if it did."""
        return None if self.wait is None else self.wait.failure


def _trainable(spec: Spec, storage: str, data: TrialData | None = None):
    res = spec.resources
    if not needs_ray_train(spec, resolve_task(spec.task)):
        return tune.with_resources(
            tune.with_parameters(run_in_process, spec=spec, data=data),
            {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker},
        )
    # The trial itself only drives a Ray Train worker group, which holds the resources.
    # Tune refuses an empty request; a CPU fraction would make N trials need N x 0.01
    # more than N worker groups, so the last one would wait. One byte of memory it is.
    return tune.with_resources(
        tune.with_parameters(run_distributed, spec=spec, storage=storage, data=data),
        tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}]),
    )


def _scheduler(spec: Spec, prior: dict | None = None):
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    scheduler = ASHAScheduler(
        metric=spec.metric,
        mode=spec.mode,
        time_attr="epoch",
        max_t=spec.max_epochs,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )
    if prior:
        seed_asha(scheduler, prior)
    return scheduler


def build_tuner(
    spec: Spec, storage: str, callbacks: list, verbose: bool, fixed_config: dict | None = None,
    *, round_no: int = 0, num_samples: int | None = None, prior: dict | None = None,
    stop: tune.Stopper | None = None, data: TrialData | None = None,
) -> tune.Tuner:
    """The search's Tuner; with `fixed_config`, a single run of that configuration (`train`).

    `round_no` > 0 (`--resume --samples +N`): `num_samples` more trials in experiment NAME+round_no,
    with the earlier trials (`prior`, the book's records) in the sampler's and ASHA's history.
    """
    train_path = needs_ray_train(spec, resolve_task(spec.task))
    if fixed_config is not None:  # one run: nothing to sample, nothing to stop early
        search_alg, scheduler, num_samples, limit = None, FIFOScheduler(), 1, None
        _need(spec, data)
    else:
        points, rewards = prior_points(prior or {}, spec)
        search_alg, limit = concurrency(spec, OptunaSearch(
            space=optuna_space(spec), metric=spec.metric, mode=spec.mode, sampler=build_sampler(spec, round_no),
            points_to_evaluate=points or None, evaluated_rewards=rewards or None,
        ), data)
        scheduler = _scheduler(spec, prior)
        num_samples = num_samples or spec.search.num_samples
    return tune.Tuner(
        _trainable(spec, storage, data),
        param_space=fixed_config or {},
        # metric and mode go to the searcher and scheduler themselves: set on TuneConfig they
        # don't reach an OptunaSearch wrapped in Tune's concurrency limiter (Ray 2.60).
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=limit,
            # One process serves many in-process trials: ~0.005 s per trial, not a new actor.
            # A Ray Train trial's process only drives its worker group: nothing to gain.
            reuse_actors=not train_path,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=round_name(spec.name, round_no) if fixed_config is None else f"{spec.name}-train",
            storage_path=storage,
            callbacks=tune_callbacks(callbacks),
            verbose=2 if verbose else 0,
            stop=stop,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            # In-process trials restart from their checkpoint here; Ray Train trials restart
            # their worker group inside the trial (distributed.py), not twice over. A trial
            # whose loss became NaN is not retried (book.py, distributed.py).
            failure_config=tune.FailureConfig(max_failures=0 if train_path else spec.failures.max_failures),
        ),
    )


def restore_tuner(
    spec: Spec, storage: str, path: str, callbacks: list, records: dict, stop: tune.Stopper | None = None,
    data: TrialData | None = None,
) -> tune.Tuner:
    """The interrupted round's Tuner: unfinished trials continue from their checkpoints."""
    tuner = tune.Tuner.restore(path, _trainable(spec, storage, data), resume_unfinished=True, resume_errored=False)
    # Tune restores the callbacks, stopper and scheduler pickled when the round first
    # started: fresh ones, holding this driver's book and tracker, and ASHA with its rungs
    # rebuilt (no public API sets them on a restored Tuner in Ray 2.60).
    internal = tuner._local_tuner
    internal.get_run_config().callbacks = tune_callbacks(callbacks)
    internal.get_run_config().stop = stop
    internal._tune_config.scheduler = _scheduler(spec, records)
    return tuner


def run_search(
    spec: Spec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    verbose: bool = False,
    console: Console | None = None,
    resume: bool = False,
    more_samples: int | None = None,
) -> SearchResult:
    """Run the search a spec describes; log it to MLflow; return its summary.

    `resume`: continue the search of the same name under `storage` whose driver died
    (finished trials stay, interrupted ones continue from their checkpoints, MLflow runs are
    reused); with `more_samples`, run that many more trials after a finished search.
    """
    started = time.monotonic()
    console = console or make_console()
    if not verbose:
        quiet_libraries()
    task = resolve_task(spec.task)  # an unknown or broken task fails before Ray starts
    data_info = check_data(spec.data) if spec.data is not None else None  # and bad data: paths
    storage = storage_location(storage)
    previous = find_previous(storage, spec.name) if resume else None
    if resume:
        check_resume(previous, spec, storage, more_samples)
    book = TrialBook(spec, storage)
    if previous is not None and previous.book_state:
        book.set_state(previous.book_state)
        book.target += more_samples or 0
    tracker = None
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri) if spec.tracking.enabled else None
    if uri is not None:
        # MLflow down mid-search: its writes wait in the search's storage (spool.py).
        tracker = Tracker(uri, spec.experiment, spool=Spool(storage, spec.name, uri))
    # Ray before the parent run: a cluster that can never hold a trial is refused first.
    # Trial processes' own logs (a line per checkpoint) stay in Ray's log files unless --verbose.
    ensure_ray(log_to_driver=verbose)
    wait = wait_for_capacity(spec, task, console)
    if tracker is not None:
        if book.parent_run_id is None:
            book.parent_run_id = tracker.start_search(spec)
        else:  # runs the dead driver left RUNNING are put right; the rest are picked up again
            book.parent_params, book.orphaned = tracker.reopen_search(book.parent_run_id, book.records, spec.metric)
    parent_run_id = book.parent_run_id

    interrupt = Interrupt()
    book.interrupt = interrupt
    callbacks: list = [book, interrupt]  # the book first: resume.py reads its state as callback 0
    mlflow_callback = None
    if tracker is not None:
        mlflow_callback = MLflowCallback(tracker, book, parent_run_id, spec, lambda c: trial_params(spec, c))
        callbacks.append(mlflow_callback)
    if not verbose:
        callbacks.append(ProgressCallback(book, book.target, console))
    callbacks += slow_poll_warning(spec, task, console)
    with interrupt:
        try:
            data = load_data(spec, data_info, console, verbose)
            stop = StopAfterFailures(book, spec.search.max_failed_trials or None, wait)
            if previous is None:
                tuner = build_tuner(spec, storage, callbacks, verbose, stop=stop, data=data)
            elif more_samples is None:
                tuner = restore_tuner(spec, storage, previous.path, callbacks, book.records, stop, data=data)
            else:
                tuner = build_tuner(spec, storage, callbacks, verbose, round_no=previous.round + 1,
                                    num_samples=more_samples, prior=dict(book.records), stop=stop, data=data)
            tuner.fit()
        except BaseException as exc:  # a Ctrl-C before fit() or a second one inside it, a Tune error
            if tracker is not None:
                tags = {INTERRUPTED_TAG: "true"} if isinstance(exc, KeyboardInterrupt) else {}
                end_running_killed(book, tracker, mlflow_callback, tags)
                tracker.end_run(parent_run_id, "KILLED", tags)
            raise
        if interrupt.after_fit():
            raise _interrupted(spec, book, tracker, mlflow_callback, started, uri, console, verbose)
        try:
            result, failure = _conclude(spec, task, book, tracker, data, started, uri, stop.failure)
        except Exception as exc:  # the trials are saved: a failure here must not lose them
            raise _failed_after_trials(exc, spec, book, tracker, started, uri, verbose) from exc
        round_no = 0 if previous is None else previous.round + (more_samples is not None)
        mark_concluded(join(storage, round_name(spec.name, round_no)))
    if not verbose:
        console.print(leaderboard(book))
    if failure is not None:
        failure.result = result
        raise failure
    return result


INTERRUPTED_TAG = "raysweep.interrupted"


def _result(spec: Spec, book: TrialBook, tracker: Tracker | None, started: float, uri: str | None,
            **fields) -> SearchResult:
    """The summary of what the book holds (`fields`: test metrics, error, status)."""
    best = book.best()
    return SearchResult(
        name=spec.name,
        experiment_id=tracker.experiment_id if tracker else None,
        parent_run_id=book.parent_run_id,
        metric=spec.metric,
        mode=spec.mode,
        best=None if best is None else {
            "trial_id": best.trial_id, "run_id": best.run_id, "config": best.config, "value": best.value,
            "epochs": best.epochs, "metrics": best.metrics,
        },
        trials=[
            {"trial_id": r.trial_id, "run_id": r.run_id, "status": r.status, "epochs": r.epochs,
             "value": r.value, "config": r.config, "metrics": r.metrics,
             # the metric epoch by epoch, timed from the search's start: anytime curves
             # (best value against epochs or seconds spent) without reading Tune's files
             "history": [{"t": round(t, 3), "epoch": epoch, "value": value} for t, epoch, value, _ in r.history],
             **({"error": r.error, "failure": r.failure} if r.error else {})}
            for r in book.records.values()
        ],
        epochs_run=book.epochs_run,
        epochs_budget=len(book.records) * spec.max_epochs,
        wall_s=round(time.monotonic() - started, 3),
        tracking_uri=uri,
        totals=search_totals(book),
        **fields,
    )


def _conclude(spec: Spec, task, book: TrialBook, tracker: Tracker | None, data: TrialData | None,
              started: float, uri: str | None, stopped: str | None = None) -> tuple[SearchResult, SearchFailed | None]:
    """After the trials: the best trial on the test split, its model, the parent run's summary;
    and why the search failed (`search_failure`; `stopped`: why it stopped early), if it did."""
    best = book.best()
    state = None  # the best checkpoint's state, for tasks that can evaluate or rebuild a model from it
    if best is not None and best.checkpoint is not None and (hasattr(task, "evaluate") or can_rebuild(task, data)):
        state = checkpoint_state(best.checkpoint)
    test_metrics: dict[str, float] = {}
    if state is not None and hasattr(task, "evaluate"):
        test_metrics = task.evaluate(trial_params(spec, best.config), state, spec.seed, **data_kwargs(data))
    failure = search_failure(spec, book, stopped)
    result = _result(spec, book, tracker, started, uri, test_metrics=test_metrics,
                     error=None if failure is None else str(failure),
                     status="finished" if failure is None else "failed")
    if tracker is not None:
        # A failed search registers no model version: its best trial is known, not vetted.
        if failure is None and state is not None and spec.tracking.log_model and can_rebuild(task, data):
            result.model_uri = tracker.log_model(
                book.parent_run_id, spec.task, trial_params(spec, best.config), state, spec.seed,
                registered_name=spec.registered_model_name, version_tags=test_metrics,
                example=None if data is None else data.example(),
            )
        _log_summary(tracker, spec, book, result, data)
        _settle_ids(tracker, result)
    return result, failure


def _settle_ids(tracker: Tracker, result: SearchResult) -> None:
    """Send what an outage spooled; runs created during it are known by their real ids now."""
    ids = tracker.finish()
    result.parent_run_id, result.best, result.trials = substitute((result.parent_run_id, result.best, result.trials), ids)


def _interrupted(spec: Spec, book: TrialBook, tracker: Tracker | None, mlflow_callback, started: float,
                 uri: str | None, console: Console, verbose: bool) -> Interrupted:
    """Ctrl-C: running trials' runs end KILLED with their epochs so far, the parent KILLED with
    the summary of what finished; no test evaluation, no model. Tune saved the rest for --resume."""
    running = [r for r in book.records.values() if r.status == RUNNING]
    counts = book.counts()
    message = (f"interrupted: {counts[FINISHED]} trial(s) finished, {counts[STOPPED]} stopped early, "
               f"{counts[FAILED]} failed, {len(running)} running saved at their last checkpoint")
    result = _result(spec, book, tracker, started, uri, status="interrupted", error=message)
    if tracker is not None:
        end_running_killed(book, tracker, mlflow_callback, {INTERRUPTED_TAG: "true"})
        _log_summary(tracker, spec, book, result, status="KILLED", tags={INTERRUPTED_TAG: "true"})
        _settle_ids(tracker, result)
    if not verbose:
        console.print(leaderboard(book))
    return Interrupted(message, result)


def end_running_killed(book: TrialBook, tracker: Tracker, mlflow_callback, tags: dict) -> None:
    """Running trials' runs end KILLED with every epoch reported so far (Tune saved them to resume)."""
    mlflow_callback.flush()  # epochs the callback still buffers
    for rec in book.records.values():
        if rec.status == RUNNING and rec.run_id is not None:
            tracker.end_run(rec.run_id, "KILLED", tags)


def _failed_after_trials(exc: Exception, spec: Spec, book: TrialBook, tracker: Tracker | None, started: float,
                         uri: str | None, verbose: bool) -> SearchFailed:
    """An error once the trials had run (test evaluation, model registry, summary, MLflow):
    the parent ends FAILED with the reason, the summary is still returned, --resume redoes this part."""
    error = f"after the trials: {type(exc).__name__}: {' '.join(str(exc).split())}"
    if verbose:
        logging.getLogger(__name__).exception("the search's last steps failed")
    result = _result(spec, book, tracker, started, uri, status="failed", error=error)
    if tracker is not None:
        try:
            tracker.log_text(book.parent_run_id, traceback.format_exc(), "error/traceback.txt")
            tracker.end_run(book.parent_run_id, "FAILED", {"raysweep.error": error[:5000]})
            _settle_ids(tracker, result)
        except Exception as again:  # MLflow itself may be what failed: the summary JSON still says why
            result.error = f"{error}; and the parent run could not be ended: {type(again).__name__}: {again}"
    return SearchFailed(f"{result.error}; the trials are saved: --resume runs these last steps again", result)


def search_failure(spec: Spec, book: TrialBook, stopped: str | None = None) -> SearchFailed | None:
    """Why the search failed, as the exception `run_search` raises once it has logged what finished.
    `stopped`: why the search stopped before its trials could run (capacity.CapacityWait)."""
    if stopped is not None:
        return SearchFailed(stopped)
    counts, best, limit = book.counts(), book.best(), spec.search.max_failed_trials
    errors = [r.error for r in book.records.values() if r.error]
    first_error = f"; first error: {errors[0]}" if errors else ""
    no_value = f"no trial reported a finite {spec.metric!r}"
    if limit is not None and counts[FAILED] >= limit:
        failed = f"{counts[FAILED]} trial{'s' if counts[FAILED] != 1 else ''} failed"
        outcome = no_value if best is None else f"best {spec.metric} {best.value:.4g} (trial {best.number:03d})"
        return TooManyFailures(
            f"search stopped: {failed} (search.max_failed_trials: {limit}); "
            f"{counts[FINISHED]} finished, {counts[STOPPED]} stopped early; {outcome}{first_error}"
        )
    return SearchFailed(no_value + first_error) if best is None else None


# Per-trial cumulative cost metrics whose sum over trials is the search's (cost.py).
SUMMED = ("cost_device_hours", "cost_cpu_core_hours", "cost_gpu_hours", "cost_usd", "flops", "samples", "energy_j")


def cost_sums(book: TrialBook) -> dict[str, float]:
    """Each cost metric summed over the trials that reported it (the last report holds the
    total), and over runs a dead driver left behind (book.orphaned)."""
    sums: dict[str, float] = {k: v for k, v in book.orphaned.items() if k in SUMMED}
    for rec in book.records.values():
        for key in SUMMED:
            if key in rec.metrics:
                sums[key] = sums.get(key, 0.0) + rec.metrics[key]
    return sums


def search_totals(book: TrialBook) -> dict[str, float | None]:
    sums = cost_sums(book)
    budget = len(book.records) * book.spec.max_epochs
    return {
        "device_hours": sums.get("cost_device_hours", 0.0),
        "cost_usd": sums.get("cost_usd", 0.0),
        "flops": sums.get("flops", 0.0),
        "samples": sums.get("samples", 0.0),
        "energy_j": sums.get("energy_j"),
        "compute_saved_fraction": 1 - book.epochs_run / budget if budget else 0.0,
    }


def _log_summary(tracker: Tracker, spec: Spec, book: TrialBook, result: SearchResult,
                 data: TrialData | None = None, *, status: str | None = None, tags: dict | None = None) -> None:
    """Parent run: best trial's params and value, test metrics, totals, best checkpoint, and
    what the spec's data: section held (rows, classes, preprocessing statistics); then ended
    with `status` (default FINISHED, or FAILED with the reason)."""
    run_id = result.parent_run_id
    if data is not None:
        tracker.log_text(run_id, json.dumps(data.info, indent=1, default=str), "data_info.json")
    counts = book.counts()
    totals = {
        "trials_total": len(book.records),
        "trials_finished": counts["finished"],
        "trials_stopped_early": counts[STOPPED],
        "trials_failed": counts[FAILED],
        "epochs_run": result.epochs_run,
        "epochs_budget": result.epochs_budget,
        "compute_saved_fraction": result.totals["compute_saved_fraction"],
        "wall_s": result.wall_s,
        **cost_sums(book),  # the children's metric names: the parent's value is their sum
        **result.test_metrics,
    }
    best = book.best()
    tags = dict(tags or {})
    if best is not None:
        totals[f"best_{spec.metric}"] = best.value
        tracker.log_best_params(run_id, trial_params(spec, best.config), book.parent_params)
        tags.update({"raysweep.best_trial_id": best.trial_id, "raysweep.best_run_id": best.run_id or ""})
        if best.checkpoint is not None:
            with best.checkpoint.as_directory() as directory:
                tracker.log_artifacts(run_id, directory, "best_checkpoint")
        if best.run_id:
            tracker.set_tags(best.run_id, {"raysweep.best": "true"})
        if result.model_uri:
            tags["raysweep.model_uri"] = result.model_uri
    with tempfile.TemporaryDirectory(prefix="raysweep-plots-") as directory:
        write_plots(book, directory)
        tracker.log_artifacts(run_id, directory, "plots")
    # Step: trials so far. An extended search (--resume --samples +N) logs its summary again.
    tracker.log_metrics(run_id, {k: float(v) for k, v in totals.items() if v is not None and math.isfinite(v)},
                        step=len(book.records))
    if status is None and result.error:
        tags["raysweep.error"] = result.error
    tracker.end_run(run_id, status or ("FAILED" if result.error else "FINISHED"), tags)
