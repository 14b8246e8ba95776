"""What `raysweep search` and `raysweep train` set up alike: the task and data checked, the
storage and tracking store chosen, the driver's book, Ctrl-C handling, Ray (and whether the
cluster can hold a trial at all), the spec's data read, and the Tune callbacks."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import ray
from ray.tune import Callback
from rich.console import Console

from .book import RUNNING, TrialBook
from .capacity import CapacityWait, check as check_capacity, trial_need
from .progress import QuietTrialWarning
from .files import check_data
from .heap import run_imports
from .jobenv import RAY_JOB_ENV
from .ingest import TrialData
from .interrupt import Interrupt
from .console import make_console
from .errors import SpecError
from .ray_internals import (quiet_auth_warning, quiet_staging_race, quiet_trial_errors, sigterm_left_alone,
                            start_local_ray)
from .signals import raise_if_requested, uninterrupted, wait_for
from .spec import Spec
from .storage import resolve as storage_location
from .tasks import resolve_task
from .tasks.contract import can_log_model
from .tracking.uri import resolve_tracking_uri

if TYPE_CHECKING:  # MLflow loads in the store's thread as Ray starts, torch after (docs/design.md, point 38)
    from .tracking.callback import MLflowCallback
    from .tracking.tracker import Tracker


@dataclass
class RunSetup:
    """A run's pieces, from `begin` on; `tracker` is the caller's (a search's spools)."""

    spec: Spec
    task: Any
    data_info: dict | None
    storage: str
    uri: str | None  # the tracking store; None: tracking.enabled is false
    console: Console
    verbose: bool
    book: TrialBook
    interrupt: Interrupt
    started: float = field(default_factory=time.monotonic)
    tracker: Tracker | None = None
    mlflow_callback: MLflowCallback | None = None
    wait: CapacityWait | None = None  # an autoscaling cluster not yet big enough (capacity.py)
    warm_up: WarmUp | None = None  # the run's end's imports, while the trials train
    loading: threading.Thread | None = None  # the task's own splits, while Ray starts (shared_splits)
    shutdown_ray: bool = False  # a command's run: the Ray it starts goes once nothing needs it (ray_done)
    own_ray: bool = False  # start_ray started Ray here (not a cluster's, not the caller's)
    _splits: Any = None
    _ray_down: threading.Thread | None = None

    def start_ray(self, open_tracker: Callable[[], Tracker] | None = None) -> None:
        """Ray up (or joined), and a cluster that can never hold a trial refused (SpecError).

        `open_tracker` (the run's MLflow store; its reachability was checked in `begin`) runs
        in a thread meanwhile, its result in `self.tracker`: MLflow creates a new SQLite
        store's schema in about 2 s, while Ray's start mostly waits on its own processes."""
        with self.imports():  # MLflow's, in the store's thread
            opening = None if open_tracker is None else _in_background(open_tracker, "raysweep-tracker")
            # Trial processes' own logs (a line per checkpoint) stay in Ray's log files unless --verbose.
            # A stop (Ctrl-C, SIGTERM) as Ray starts is acted on once it is up: cut short, `ray.init`
            # left Ray's agent processes running for a minute or two, and once the command segfaulted as it exited.
            with uninterrupted(), sigterm_left_alone() as rays:
                self.own_ray = ensure_ray(log_to_driver=self.verbose)
            self.interrupt.take_sigterm_back(*rays)  # from Ray's core worker's handler; Ray's in place at the end
            if opening is not None:
                self.tracker = wait_for(opening)  # its error, if it raised one
        self.wait = wait_for_capacity(self.spec, self.console)
        raise_if_requested()

    def imports(self) -> contextlib.AbstractContextManager:
        """Around the run's imports after its start (torch, MLflow: docs/design.md, point 38):
        a command's run (its own process) leaves what they build out of the collector's walks
        (heap.heavy_imports); `run_search` called from a notebook leaves the caller's collector alone."""
        return run_imports(self.shutdown_ray)

    def callbacks(self, parent_run_id: str | None, params_of: Callable[[dict], dict], progress,
                  *end_work: str | Callable[[], None]) -> list:
        """The run's Tune callbacks: the book first (resume.py reads its state as callback 0,
        and it bills each report before MLflow sees it), Ctrl-C, MLflow, what the run's end
        needs done once per process (`end_work`: modules to import, functions to call; and
        model logging's: WarmUp), progress."""
        from .distributed import slow_poll_warning
        from .tracking.callback import MLflowCallback

        callbacks: list = [self.book, self.interrupt]
        if self.tracker is not None:
            self.mlflow_callback = MLflowCallback(self.tracker, self.book, parent_run_id, self.spec, params_of)
            # `spec.data` stands for the data it will load: a model needs input examples from either.
            model = self.spec.tracking.log_model and can_log_model(self.task, self.spec.data)
            self.warm_up = WarmUp(model, end_work)
            callbacks += [self.mlflow_callback, self.warm_up]
        if not self.verbose:
            callbacks.append(progress)
        # A trial silent for minutes is named (a hang holds a search for good: Tune has no trial timeout).
        return [*callbacks, QuietTrialWarning(self.book, console=self.console),
                *slow_poll_warning(self.spec, self.task, self.console)]

    def load_data(self) -> TrialData | None:
        return load_data(self.spec, self.data_info, self.console, self.verbose)

    def shared_splits(self) -> Any:
        """The task's own splits, loaded once in this process for every trial (and the test
        evaluation), or None: each trial loads its own (a task whose splits depend on the
        config, a spec with `data:`, or a load that failed here, and fails again there, in the
        trial, where its error is reported)."""
        while self.loading is not None and self.loading.is_alive():
            self.loading.join(0.2)
            raise_if_requested()  # a stop that went missing (signals.py): not a wait for good
        return self._splits

    def _load_splits(self) -> None:
        try:
            self._splits = self.task.shared_splits(self.spec.seed)
            if self._splits is not None:
                self.task.give_splits(self.spec.seed, self._splits)
        except Exception:  # noqa: BLE001 - see shared_splits
            logging.getLogger(__name__).debug("loading the task's splits in the driver failed", exc_info=True)

    def ray_done(self) -> None:
        """Nothing more of the run needs Ray: a command's run (`shutdown_ray`) shuts down the
        Ray it started, in a thread, while its last steps (the model's logging, the summary and
        views) go on. Ray's shutdown takes about 1.5 s, which the command's exit paid after
        them, and until then Ray's idle processes shared the cores with them (docs/design.md,
        point 29). A library caller's Ray stays up for its next search."""
        if self.shutdown_ray and self.own_ray and self._ray_down is None:
            # Ray's references that are garbage now (a streamed split's iterators and blocks, after
            # the test metrics) are freed while Ray is up: one freed in this thread while the other
            # shuts Ray down made Ray end the process ("The core worker has already been shutdown",
            # exit 1, the parent run left RUNNING; 1 search in 4 with a streamed data: section).
            gc.collect()
            self._ray_down = threading.Thread(target=ray.shutdown, name="raysweep-ray-shutdown")
            self._ray_down.start()

    def ray_shut_down(self) -> None:
        """Wait for `ray_done`'s shutdown: the run returns with Ray down, as a command exits."""
        if self._ray_down is not None:
            self._ray_down.join()

    def warmed_up(self) -> None:
        if self.warm_up is not None:
            self.warm_up.join()


class WarmUp(Callback):
    """Does what the run's end will need done once per process, in a thread started at the
    first trial result: its best model's logging's imports (tracking.models.warm_up) and `work`
    (modules to import: the plots' matplotlib; functions to call: views.warm_up). The trials'
    time pays for them, not the user's (docs/design.md, point 20). Not earlier: while trial
    processes start, every core is busy importing torch, and the thread would delay the first
    epoch on a small machine."""

    def __init__(self, model: bool, work: tuple[str | Callable[[], None], ...]):
        self.model, self.work = model, work
        self.thread: threading.Thread | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="raysweep-warm-up", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        for item in self.work:
            if callable(item):
                item()  # one that raises nothing: views.warm_up keeps its errors for the real drawing
                continue
            with contextlib.suppress(ImportError):  # the real import reports it
                importlib.import_module(item)
        if self.model:
            from .tracking.models import warm_up

            warm_up()

    def join(self) -> None:
        """Wait for the thread, if it started: the run's end logs alone (imports in two threads
        at once can meet half-initialised modules)."""
        if self.thread is not None:
            self.thread.join()

    def __getstate__(self):  # Tune pickles its callbacks; a thread does not travel
        return {**self.__dict__, "thread": None}


def begin(spec: Spec, *, storage: str | None, tracking_uri: str | None, verbose: bool,
          console: Console | None, shutdown_ray: bool = False) -> RunSetup:
    """Everything checked that can be before Ray starts: an unknown or broken task, bad
    `data:` paths; the storage and tracking store chosen. `shutdown_ray`: see `RunSetup.ray_done`."""
    console = console or make_console()
    if not verbose:
        quiet_libraries()
    if RAY_JOB_ENV in os.environ:
        # A Ray job's driver imports torch before Ray: Ray deletes and unpacks its working
        # directory again as it starts the job's worker processes, and torch loaded while the
        # directory is gone kills the process (oneMKL: "Cannot load .../libtorch_cpu.so"). Its
        # start is a cluster's, not a laptop's: docs/design.md, point 38.
        with run_imports(shutdown_ray):
            importlib.import_module("torch")
    task = resolve_task(spec.task)
    data_info = check_data(spec.data) if spec.data is not None else None
    if spec.cost.country is not None:
        from .carbon import known_country

        if not known_country(spec.cost.country):
            raise SpecError(f"cost.country: {spec.cost.country!r} is not in codecarbon's energy-mix data "
                            "(ISO 3166-1 alpha-3 codes such as USA, FRA, DEU)")
    storage = storage_location(storage)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri) if spec.tracking.enabled else None
    book = TrialBook(spec, storage)
    interrupt = Interrupt()
    book.interrupt = interrupt
    run = RunSetup(spec, task, data_info, storage, uri, console, verbose, book, interrupt, shutdown_ray=shutdown_ray)
    if spec.data is None and callable(getattr(task, "shared_splits", None)):
        # In a thread while Ray starts (the caller's next step), which is mostly waiting.
        run.loading = threading.Thread(target=run._load_splits, name="raysweep-splits", daemon=True)
        run.loading.start()
    return run


def quiet_libraries() -> None:
    """Keep library chatter (schema migrations, study creation) out of the progress display."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # ... and for an MLflow imported after this (a run imports it while Ray starts: design
    # point 38), whose import sets its logger to this variable's level, INFO by default: a
    # search against a server printed "INFO ... Waiting up to 300 seconds for model version".
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # A SQLite store's failed write (its disk full) is logged there with SQLAlchemy's traceback,
    # then raised: raysweep says it once, in a line (spooled, or why the search stopped).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # After a Ctrl-C Tune explains its own Tuner.restore API and that it could not read the
    # metrics of trials it stopped: raysweep says what happened and how to --resume instead.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_auth_warning()
    quiet_staging_race()
    quiet_trial_errors()
    # Tune warns whenever checkpoints of short epochs force experiment snapshots; it says
    # nothing a user can act on for second-long trials.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A search that stops while trials are failing (its disk full) leaves their errors unread:
    # Ray prints each with its traceback as the process exits, after raysweep's line saying why.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    # Tune's newer console output prints an experiment banner even at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # MLflow prints a "View run" link to stdout whenever a run on a server ends: one per
    # trial between the progress lines. raysweep prints the runs' link once, at the end.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Tune's own CSV and TensorBoard loggers: every epoch of every trial written twice more on
    # the driver, while the trial waits (MLflow has the metrics). Its result.json stays
    # (tune_callbacks); "0" brings the others back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def _in_background(call: Callable[[], Any], name: str) -> Future:
    """`call()` in a daemon thread; its result or error in the future returned.

    A daemon, not a pool's thread, which the command waits for as it exits: a SIGTERM (a stop,
    as a Ctrl-C) 3 s into `raysweep train`, while this thread, the splits' and the main thread
    were importing, left this one and the splits' waiting on import locks for good, and the
    command waiting for them until a second Ctrl-C."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - the caller's to raise, in its thread
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


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
    if address == "local":
        start_local_ray(logging_level=logging.WARNING, log_to_driver=log_to_driver)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    return True


def wait_for_capacity(spec: Spec, console: Console) -> CapacityWait | None:
    """Refuse a trial no node of a fixed cluster can hold (SpecError); on an autoscaling
    cluster not yet big enough, warn and return the stopper that gives up after
    `resources.scale_wait_s`."""
    need = trial_need(spec)
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
    consoles = [] if verbose else [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    for handler in consoles:  # Ray Data's own console handler (its file handler keeps everything)
        # An error reading the data is raised as raysweep's one line (a value in the data:
        # SpecError): Ray Data's own two ERROR lines about it would come first.
        handler.setLevel(logging.CRITICAL)
        # ... and it would say, once, that the bars just turned off are off.
        handler.addFilter(lambda record: not str(record.msg).startswith("Progress bars disabled"))
    console.print(f"data: reading {spec.data.format} from {spec.data.train} ...")
    try:
        return load(spec.data, info, say=console.print)
    finally:
        for handler in consoles:  # the trials' warnings after, as before
            handler.setLevel(logging.WARNING)


def data_kwargs(data: TrialData | None) -> dict:
    """`evaluate`'s extra argument when the spec streams its data (tasks/__init__.py)."""
    return {} if data is None else {"data": data}


def end_running_killed(book: TrialBook, tracker: Tracker, mlflow_callback, tags: dict) -> None:
    """Running trials' runs end KILLED with every epoch reported so far (Tune saved them to resume)."""
    if mlflow_callback is not None:  # None: stopped before the trials' callbacks existed
        mlflow_callback.flush()  # epochs the callback still buffers
    for rec in book.records.values():
        if rec.status == RUNNING and rec.run_id is not None:
            tracker.end_run(rec.run_id, "KILLED", tags)
    for left in book.waiting.values():  # --resume: still waiting for their trials (Tracker.reopen_search)
        tracker.end_run(left.run_id, "KILLED", tags)
