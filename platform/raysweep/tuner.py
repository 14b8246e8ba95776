"""The Tune side of a search: the trainable and its resources, Optuna's searcher, ASHA, how many
trials run at once, when the whole search stops, and a restored round's Tuner."""

from __future__ import annotations

from typing import Any, Callable

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from .book import FAILED, TrialBook
from .budget import Budget
from .capacity import CapacityLimiter, CapacityWait, check as check_capacity, trial_need
from .distributed import run_distributed
from .failures import TRACKING
from .ingest import TrialData
from .jobenv import scoped_env, working_dir
from .ray_internals import (keep_trial_actors, restored_searcher, results_not_read, set_restored_tuner,
                            state_saves_spaced, trial_actors_inherit_env)
from .resume import refill_checkpoints, retrain_name, round_name, seed_asha
from .searcher import FixedConfigs, SweepSearch
from .signals import raise_if_requested
from .spec import Spec
from .tasks import needs_ray_train, resolve_task
from .trial import run_in_process


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
    need = trial_need(spec, streamed)
    if streamed:
        check_capacity(need, cache=spec.data.cache)
    return need, streamed


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


def _live() -> tune.Stopper:
    """The stopper of the search running in this process (a no-op where none is)."""
    return _live_stopper or tune.stopper.NoopStopper()


class StopAfterFailures(tune.Stopper):
    """Stops the whole search once `limit` trials have failed (search.max_failed_trials), when
    an autoscaling cluster has not grown to hold a trial in time (`wait`), or once a limit of
    the `budget` is reached; and a trial whose MLflow writes were refused (the book marked it
    failed: tracking.py), or at a rung past which the budget has no room for it.

    Reads the driver's `TrialBook`, which counts a trial only when Tune gives up on it (and,
    run before the callbacks, sees a result before the book does).
    """

    def __init__(self, book: TrialBook, limit: int | None, wait: CapacityWait | None = None,
                 budget: Budget | None = None):
        global _live_stopper
        self.book, self.limit, self.wait, self.budget = book, limit, wait, budget
        _live_stopper = self

    def __reduce__(self):
        # Tune pickles the stopper with its experiment state and, resuming, puts the unpickled
        # one in place of the stopper it was given: a dead driver's, holding a stale copy of its
        # book (failures and spend after the resume went uncounted). Unpickled, it is the
        # stopper of the search this process runs now.
        return _live, ()

    def __call__(self, trial_id: str, result: dict) -> bool:
        rec = self.book.records.get(trial_id)
        if rec is not None and rec.failure == TRACKING:
            return True
        return self.budget is not None and not self.budget.may_continue(trial_id, result)

    def stop_all(self) -> bool:
        if self.wait is not None and self.wait.stop_all():
            return True
        if self.budget is not None and self.budget.exhausted():
            return True
        return self.limit is not None and self.book.counts()[FAILED] >= self.limit

    @property
    def failure(self) -> str | None:
        """Why the search stopped before its trials could run, if it did."""
        return None if self.wait is None else self.wait.failure


_live_stopper: StopAfterFailures | None = None


def _trainable(spec: Spec, storage: str, data: TrialData | None = None, splits: Any = None):
    res = spec.resources
    if not needs_ray_train(spec, resolve_task(spec.task)):
        return tune.with_resources(
            tune.with_parameters(run_in_process, spec=spec, data=data, splits=splits),
            {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker},
        )
    # The splits reach the workers by reference, put in the object store once for the search:
    # the trial process only passes it on (a tuple: Tune's with_parameters puts each value,
    # and a bare reference cannot be put).
    shared = None if splits is None else (ray.put(splits),)
    # The trial itself only drives a Ray Train worker group, which holds the resources.
    # Tune refuses an empty request; a CPU fraction would make N trials need N x 0.01
    # more than N worker groups, so the last one would wait. One byte of memory it is.
    return tune.with_resources(
        tune.with_parameters(run_distributed, spec=spec, storage=storage, data=data, splits=shared),
        tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}]),
    )


def _scheduler(spec: Spec, prior: dict | None = None):
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    scheduler = ASHAScheduler(
        metric=spec.rank_metric,
        mode=spec.rank_mode,
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
    stop: tune.Stopper | None = None, data: TrialData | None = None, splits: Any = None,
    budget: Budget | None = None, confirm: list[dict] | None = None, label: str = "confirm",
) -> tune.Tuner:
    """The search's Tuner; with `fixed_config`, a single run of that configuration (`train`);
    with `confirm`, one run of each of those configurations to `max_epochs` (confirm.py, and
    audit.py's round with `label` "audit"), in experiment NAME-<label>.
    `splits`: the task's own, loaded once (runsetup.RunSetup.shared_splits), for every trial.
    `budget` (search.budget): the searcher starts a trial only if it fits (the stopper, given
    the same budget, stops trials at rungs past which it has no room).

    `round_no` > 0 (`--resume --samples +N`): `num_samples` more trials in experiment NAME+round_no,
    with the earlier trials (`prior`: `TrialBook.searched()`) in the sampler's and ASHA's history.
    """
    train_path = needs_ray_train(spec, resolve_task(spec.task))
    if fixed_config is not None:  # one run: nothing to sample, nothing to stop early
        search_alg, scheduler, num_samples, limit = None, FIFOScheduler(), 1, None
        _need(spec, data)
    elif confirm is not None:
        search_alg, scheduler = FixedConfigs(confirm), FIFOScheduler()
        num_samples, limit = len(confirm), spec.search.max_concurrent
        _need(spec, data)
    else:
        search_alg, limit = concurrency(spec, SweepSearch(spec, round_no, prior, budget), data)
        scheduler = _scheduler(spec, prior)
        # -1: Tune's "until the searcher says it has finished" (a budget, spent)
        num_samples = num_samples or spec.search.samples or -1
    return tune.Tuner(
        _trainable(spec, storage, data, splits),
        param_space=fixed_config or {},
        # metric and mode go to the searcher and scheduler themselves: set on TuneConfig they
        # don't reach a searcher wrapped in Tune's concurrency limiter (Ray 2.60).
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
            name=(f"{spec.name}-train" if fixed_config is not None else
                  retrain_name(round_name(spec.name, round_no), label) if confirm is not None else
                  round_name(spec.name, round_no)),
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
    data: TrialData | None = None, splits: Any = None, budget: Budget | None = None, retrain: bool = False,
    say: Callable[[str], None] = print,
) -> tune.Tuner:
    """The interrupted round's Tuner: unfinished trials continue from their checkpoints (each
    one's there: `resume.refill_checkpoints`, which `say`s what it refilled).
    `retrain`: a round of fixed configurations (search.confirm's, scheduler.audit's), run FIFO."""
    for line in refill_checkpoints(path):
        say(line)
    tuner = tune.Tuner.restore(path, _trainable(spec, storage, data, splits), resume_unfinished=True,
                               resume_errored=False)
    # Fresh callbacks holding this driver's book and tracker, and ASHA with its rungs rebuilt.
    scheduler = FIFOScheduler() if retrain else _scheduler(spec, records)
    set_restored_tuner(tuner, callbacks=tune_callbacks(callbacks), stop=stop, scheduler=scheduler)
    searcher = restored_searcher(tuner)
    while not isinstance(searcher, SweepSearch) and hasattr(searcher, "searcher"):  # the concurrency limiter's
        searcher = searcher.searcher
    if isinstance(searcher, SweepSearch):  # the budget of this driver's book (pickled without one)
        searcher.budget = budget
    return tuner


# Tune creates at most this many trials ahead of resources. Its default for a searcher is the
# concurrency limit when the run started: 1 on a cluster that starts with one free CPU, so
# nodes that joined later were filled one trial at a time. The limiter (capacity.py) still
# bounds running + pending trials by what the cluster holds.
MAX_PENDING_TRIALS = 256
# Trials run in the directory the command ran in (on a cluster, the job's working directory), as
# a task run by hand (LocalContext) does: Tune's default moved each trial's process into its
# trial folder, and Ray Train's workers into the Train run's, so a task's relative paths, right
# in a notebook, failed in a search. Tune hands the variable to its trial actors, and they to
# Ray Train; a value the user exported wins. (A local Ray has it on its node: ray_internals.)
STAY_IN_WORKING_DIR = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}


def fit(tuner: tune.Tuner) -> None:
    """Run a Tune round. Its ResultGrid is not raysweep's record (the book is), so a failure to
    build it after the trials ended does not fail the search (ray_internals.results_not_read)."""
    raise_if_requested()  # a stop that went missing before the round (signals.py): not a round run
    # TUNE_MAX_PENDING_TRIALS_PG is read as fit() starts.
    with (scoped_env({"TUNE_MAX_PENDING_TRIALS_PG": str(MAX_PENDING_TRIALS)}),
          scoped_env(STAY_IN_WORKING_DIR, override=False), trial_actors_inherit_env(),
          keep_trial_actors(), state_saves_spaced()):
        with results_not_read():
            tuner.fit()
