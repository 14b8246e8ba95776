"""Every use of Ray's private API, behind one door.

Each function names what it reaches into and why no public API does it; all were checked on
Ray 2.60 (`CHECKED_ON`). `tests/test_structure.py` fails when an installed Ray moves any
of them, rather than a search failing on a user's cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

CHECKED_ON = "2.60"

# Ray logs "Token authentication is enabled" at every start; raysweep keeps token auth on
# and says so in its docs, so in quiet mode the line is noise.
AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"

# Settings of Ray's own config (RayConfig, not public API) for the Ray nodes raysweep starts:
# `ray.init` for a local search, the test session's and the benchmarks' Ray, the test
# cluster's `ray start`; cluster/ sets them on its nodes. Each is read from `RAY_<name>` by
# the processes a node starts, so a value the user has set wins.
NODE_ENV = {
    # Ray ends an idle worker process after 1 s once a node has fewer free CPUs than idle
    # processes, as when a trial's workers hold the CPUs of a laptop. A streamed split's Ray Data tasks then start fresh processes every
    # epoch, the ranks waiting for them: 4.5-6 s of a two-worker epoch of 11 s here, 1.2-1.5 s
    # with the processes kept (docs/design.md, point 19). A minute covers the gap between
    # one epoch's reads and the next of epochs up to about a minute.
    "RAY_idle_worker_killing_time_threshold_ms": "60000",
}


# Only for a Ray that raysweep starts on this machine with `ray.init` (not `LocalCluster`,
# which stands in for a real cluster, nor cluster/):
LOCAL_NODE_ENV = {
    # Ray Train's preemption watcher, an actor every worker group starts to follow Ray's
    # node-drain notices (spot instances being taken back). One machine's own Ray is never
    # drained, and the watcher is one more process of about 200 MB per trial, starting while
    # the first epoch trains (docs/design.md, point 28).
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Tune's default variable for its trial actors (`class_cache.DEFAULT_ENV_VARS`): set on
    # the node, every process has it without a runtime env (`trial_actors_inherit_env`).
    "PL_DISABLE_FORK": "1",
    # tuner.STAY_IN_WORKING_DIR's, on the node for the same reason.
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}

# The environment each Ray this process started was given, by the node's id: every process of
# that Ray inherits it (`trial_actors_inherit_env`).
_STARTED_WITH: dict[str, dict[str, str]] = {}


def start_local_ray(**init_kwargs: Any) -> None:
    """`ray.init` of a new Ray on this machine, with `NODE_ENV` and `LOCAL_NODE_ENV` put into
    this process's environment first where not set (its processes, Ray Train's controllers
    among them, inherit it), and that environment remembered for `trial_actors_inherit_env`."""
    import ray

    for name, value in {**NODE_ENV, **LOCAL_NODE_ENV}.items():
        os.environ.setdefault(name, value)
    # Ray's processes share this one's process group, so the SIGHUP a shell sends a job whose
    # terminal closed reached them too, and they died under the run's stop (interrupt.py):
    # they start with it blocked, as Ray starts them with SIGINT blocked.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        ray.init(address="local", **init_kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    _STARTED_WITH[ray.get_runtime_context().get_node_id()] = dict(os.environ)


@contextlib.contextmanager
def sigterm_left_alone() -> Iterator[list]:
    """While the block starts or joins Ray: `ray.init` does not install its driver's SIGTERM
    handler (`sys.exit(15)`, through `ray._private.utils.set_sigterm_handler`), so that the
    handler of a run that has begun (interrupt.py) keeps taking SIGTERM as a stop. The list
    the block gets holds the handler left out, for the run to put in place as it ends. No
    public API leaves it out."""
    from ray._private import utils

    installs, left_out = utils.set_sigterm_handler, []
    utils.set_sigterm_handler = left_out.append
    try:
        yield left_out
    finally:
        utils.set_sigterm_handler = installs


@contextlib.contextmanager
def trial_actors_inherit_env() -> Iterator[None]:
    """While the block runs Tune: trial actors get no runtime env for variables they inherit.

    Tune gives its trial actors' class a runtime env of its default variables and of those of
    its `ENV_VARS_TO_PROPAGATE` set in this process (`ray.tune.execution.class_cache`). Ray
    hands an actor with any runtime env none of the worker processes it starts idle beside
    the driver (one per CPU): the first trials waited for new processes while those idled
    (docs/design.md, point 31). On a Ray `start_local_ray` started, every process inherited
    this process's environment then: a variable with that value is left out of Tune's list,
    and with none left, trials start in the waiting processes. On any other Ray (a cluster,
    `ray job submit`), and for a variable changed since, Tune's runtime env as it is."""
    import ray
    from ray.tune.execution import class_cache

    inherited = _STARTED_WITH.get(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
    if inherited is None:
        yield
        return
    saved = class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.DEFAULT_ENV_VARS = {k: v for k, v in saved[0].items() if inherited.get(k) != v}
    class_cache.ENV_VARS_TO_PROPAGATE = {k for k in saved[1] if k in os.environ and os.environ[k] != inherited.get(k)}
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE = saved


@contextlib.contextmanager
def keep_trial_actors() -> Iterator[None]:
    """While the block runs Tune: a trial process whose trial ends waits for the next trial
    (`reuse_actors`), however many others end at that moment with none pending yet.

    Tune caches an ended trial's actor for reuse only when a trial is pending for it, or when
    no other actor is cached (`ray.tune.utils.object_cache._ObjectCache`, built by
    `TuneController`); any other is stopped. In a search of short trials two often end
    together before the searcher has suggested the next: one process stopped, its CPU idle
    while a new one started (3-4 s of a 2-core machine's CPU for imports), and by then the
    surviving process had taken the next trial, so Tune stopped the new one too. Traced in a
    24-trial search of the README's spec on 2 CPUs: from the first such stop, the other 15
    trials ran one at a time in one process (docs/design.md, point 33). Here every ended
    trial's actor is cached while the search may start more; Tune still stops them all once
    the searcher is finished and nothing is pending, and as the run ends."""
    from ray.tune.execution import tune_controller

    base = tune_controller._ObjectCache

    class KeepEvery(base):
        def cache_object(self, key, obj) -> bool:
            self._cached_objects[key].append(obj)
            self._num_cached_objects += 1
            return True

        def flush_cached_objects(self, force_all: bool = False):
            if force_all:  # the search is over: Tune stops them
                yield from super().flush_cached_objects(force_all=True)

    tune_controller._ObjectCache = KeepEvery
    try:
        yield
    finally:
        tune_controller._ObjectCache = base


# Tune's state is saved at most this often for trials' checkpoints (state_saves_spaced).
STATE_SAVE_SPACING_S = 1.0


@contextlib.contextmanager
def state_saves_spaced(spacing_s: float = STATE_SAVE_SPACING_S) -> Iterator[None]:
    """While the block runs Tune: the save of its experiment state that Tune forces each time a
    trial has registered `checkpoint.keep` checkpoints since the last save waits until
    `spacing_s` have passed since that save. Tune's own schedule (`TUNE_GLOBAL_CHECKPOINT_S`)
    and its save as the run ends or is interrupted are unchanged.

    Tune forces those saves (`_ExperimentCheckpointManager.on_trial_checkpoint`, from
    `TuneController`) so that its saved state never names a checkpoint it has since deleted;
    each one writes the whole trial table and waits for its copy to storage, in the loop that
    takes the trials' reports. With raysweep's default `keep: 2` and a checkpoint every epoch
    that was a save every epoch or so: 113 in an 8 s search of 16 trials, 1.6 s of the driver's
    loop (docs/design.md, point 35). `--resume` does not need them for the checkpoints (it
    trusts those on storage over the saved state: `resume.refill_checkpoints`,
    `context._checkpoints_left`, point 32); the saves keep what a driver killed -9 loses to
    about a second of the search (trials started or ended since the last save run again)."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    base = _ExperimentCheckpointManager.on_trial_checkpoint

    def spaced(self, trial) -> None:
        base(self, trial)
        # The trial's count stays at `keep` or more: its next checkpoint after the spacing forces the save.
        if time.monotonic() - self._last_save_time < spacing_s:
            self._should_force_sync_up = False

    _ExperimentCheckpointManager.on_trial_checkpoint = spaced
    try:
        yield
    finally:
        _ExperimentCheckpointManager.on_trial_checkpoint = base


class NoDatasetShards:
    """What the workers of a group given no datasets hold for `ray.train.get_dataset_shard`:
    the KeyError Ray's own provider raises for a name it was not given."""

    def get_dataset_shard(self, dataset_info):
        raise KeyError(f"Dataset shard for '{dataset_info.dataset_name}' not found. Please ensure that the "
                       "dataset is passed through the Trainer `datasets` argument.")


def torch_trainer_class():
    """Ray Train's `TorchTrainer` with its datasets callback (`DatasetsCallback`, among
    `DataParallelTrainer._create_default_callbacks`) starting no `DatasetManager` actor for a
    group given no datasets: Ray's starts one for every group, a process of about 200 MB whose
    start the workers wait on (docs/design.md, point 28). The callback still hands the driver's
    `DataContext` to the workers, and `get_dataset_shard` still raises Ray's KeyError. No
    public option leaves the actor out."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

    class DatasetsCallbackWithoutIdleManager(DatasetsCallback):
        def before_init_train_context(self, workers):
            if self._datasets:
                return super().before_init_train_context(workers)
            return {"dataset_shard_provider": [NoDatasetShards()] * len(workers)}

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            for callback in callbacks:
                if type(callback) is DatasetsCallback:
                    callback.__class__ = DatasetsCallbackWithoutIdleManager
            return callbacks

    return LeanTorchTrainer


def autoscaler_cluster_config():
    """The autoscaler's node types and their maximum counts, as it publishes them in the GCS
    (`ray._private.state.state.get_cluster_config()`, what Ray Train reads to refuse worker
    groups no cluster size can hold); None where no autoscaler runs."""
    from ray._private.state import state

    return state.get_cluster_config()


def set_restored_tuner(tuner, *, callbacks: list, stop, scheduler) -> None:
    """Give a restored `Tuner` fresh callbacks, stopper and scheduler. `Tuner.restore` brings
    back the ones pickled when the round first started (holding a dead driver's book and
    tracker, and ASHA without its rungs), and takes no replacements for them."""
    internal = tuner._local_tuner
    internal.get_run_config().callbacks = callbacks
    internal.get_run_config().stop = stop
    internal._tune_config.scheduler = scheduler


def restored_searcher(tuner):
    """The searcher a restored `Tuner` will run (its TuneConfig's, unpickled from tuner.pkl), to
    give it this driver's budget before `fit` restores its state (no public accessor)."""
    return tuner._local_tuner._tune_config.search_alg


def asha_rungs(scheduler) -> list[tuple[int, dict]]:
    """(milestone epoch, {trial id: recorded value}) of every rung of an `ASHAScheduler`, to
    fill with earlier trials' values (Tune restores the scheduler empty; no public API takes
    past results)."""
    return [(milestone, recorded) for bracket in scheduler._brackets for milestone, recorded in bracket._rungs]


def asha_sign(scheduler) -> float:
    """ASHA records `sign x value` (+1 for mode max, -1 for min)."""
    return scheduler._metric_op


def optuna_study(searcher):
    """The Optuna study inside Tune's `OptunaSearch` (`_ot_study`): raysweep's searcher adds
    earlier rounds' trials to it as Optuna recorded them (pruned ones with their intermediate
    values, which `evaluated_rewards` cannot carry) and reads its trials' states."""
    return searcher._ot_study


def propagate_to_train_controller(name: str, value: str) -> None:
    """Set `name` here and have Ray Train pass it on to the controllers this process starts
    (and the placement-group cleaner they start): `ENV_VARS_TO_PROPAGATE`, Train V2."""
    from ray.train.v2._internal import constants

    os.environ[name] = value
    constants.ENV_VARS_TO_PROPAGATE.add(name)


def tune_report_queue():
    """The queue Ray's `TuneReportCallback` puts a Ray Train trial's reports on, in the Tune
    trial's process (for waiting until Tune has taken them all)."""
    from ray.train._internal.session import get_session

    return get_session()._get_or_create_inter_actor_queue()


def worker_exceptions(group_error: BaseException) -> list[BaseException]:
    """The exception each worker raised, by rank, out of Ray Train's `WorkerGroupError`
    (each wrapped with its traceback text; `_base_exc` holds the original)."""
    failures = getattr(group_error, "worker_failures", {}) or {}
    return [getattr(f, "_base_exc", f) for _, f in sorted(failures.items())]


def stop_retrying(trial: Any) -> None:
    """No more retries for a Tune trial whose retry is being decided: `Trial.max_failures` is
    what Tune's retry check reads (no public setter)."""
    trial.max_failures = 0


def quiet_auth_warning() -> None:
    logging.getLogger(AUTH_SETUP_LOGGER).setLevel(logging.ERROR)


# Tune saves its experiment state (trial table, searcher, callbacks) into a staging folder
# while the previous save's copy to the storage path may still be running in a thread. Each
# file is written under a temporary name (".<uuid>-tmp-<name>") and renamed: a copy that
# listed the temporary file before the rename fails with FileNotFoundError, and Tune logs it
# with a traceback ("Saving experiment state to storage ... failed"). Nothing is lost: the
# next save copies the whole folder again, and the last one, at the search's end, waits for
# the copy with nothing writing. Seen about once in 20 test sessions (CI, an error after the
# trials), on Ray 2.60.
EXPERIMENT_STATE_LOGGER = "ray.tune.execution.experiment_state"


# A storage whose disk is full fails every save after (each trial's checkpoint brings one):
# Tune's traceback each time, between the progress lines. Said once, in a line.
_told_full: list[bool] = []


def _not_a_staging_race(record: logging.LogRecord) -> bool:
    from .failures import no_space

    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, FileNotFoundError) and "-tmp-" in str(error):
        return False
    full = no_space(error) if error is not None else None
    if full is not None:
        if _told_full:
            return False
        _told_full.append(True)
        record.msg = f"{record.getMessage().rstrip(': ')}: {full} (--resume starts from the state saved last)"
        record.args, record.exc_info, record.exc_text = (), None, None
    return True


def quiet_staging_race() -> None:
    """Drop Tune's traceback for a copy that raced its own temporary file (above), and say a
    full disk once, in a line; every other failure to save the experiment state is still
    logged as Tune logs it."""
    logging.getLogger(EXPERIMENT_STATE_LOGGER).addFilter(_not_a_staging_race)  # added once


# Tune logs every failed trial at ERROR with Ray's whole traceback (40-odd lines of Ray's own
# frames between the progress lines), and at the end "Trials did not complete: [...]" naming
# trials by Tune's ids. raysweep prints one line per failed trial instead (progress.py) and
# keeps the traceback in the trial's MLflow run (error/traceback.txt); --verbose keeps Tune's.
# TUNE_PRINT_ALL_TRIAL_ERRORS is read by TuneController.__init__ (Ray 2.60).
TUNE_LOGGER = "ray.tune.tune"


def _not_incomplete_trials(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Trials did not complete")


def quiet_trial_errors() -> None:
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    logging.getLogger(TUNE_LOGGER).addFilter(_not_incomplete_trials)  # added once


# `Tuner.fit()` ends by building a ResultGrid, which reads back every errored trial's pickled
# error file (TunerInternal.fit, Ray 2.60). raysweep reads its own book, never the grid: a file
# Tune could not write whole (storage full) failed a search that had run to its end
# (EOFError from cloudpickle) with a traceback.
RESULT_GRID_FILE = "ray/tune/result_grid.py"


def raised_building_results(exc: BaseException) -> bool:
    """Whether `exc` came out of Tune building its ResultGrid after the trials ended."""
    import traceback

    return any(frame.filename.replace("\\", "/").endswith(RESULT_GRID_FILE)
               for frame in traceback.extract_tb(exc.__traceback__))


@contextlib.contextmanager
def results_not_read() -> Iterator[None]:
    """Around `Tuner.fit()`: an error building its ResultGrid is dropped, any other raised."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unless it came from the grid
        if not raised_building_results(exc):
            raise


def _saved_unfinished_trials(experiment_path: str) -> list:
    """The unfinished trials (stubs, with their run metadata) of Tune's newest saved state of
    an experiment, read as Tune's controller reads it (`TuneController._restore_trials`: the
    state file's `trial_data`, `Trial.from_json_state`, `restore_run_metadata`)."""
    import json

    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.experiment.trial import Trial

    from .storage import filesystem

    fs, root = filesystem(experiment_path)
    newest = _find_newest_experiment_checkpoint(root, fs=fs)
    if newest is None:
        return []
    with fs.open_input_stream(newest) as f:
        state = json.loads(f.readall())
    trials = []
    for json_state, run_metadata in state["trial_data"]:
        trial = Trial.from_json_state(json_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        if trial.status not in (Trial.TERMINATED, Trial.ERROR):
            trials.append(trial)
    return trials


def unfinished_trial_ids(experiment_path: str) -> set[str]:
    """The trials a restored Tune experiment starts or continues: unfinished when last saved."""
    return {trial.trial_id for trial in _saved_unfinished_trials(experiment_path)}


def unfinished_checkpoints(experiment_path: str) -> dict[str, tuple[list[str], str, int | None]]:
    """For each unfinished trial of a Tune experiment (by its directory's name): the names of
    the checkpoints Tune's newest saved experiment state keeps for it, the latest, which the
    trial will be restored from (the kept ones are the trial's `checkpoint_manager`'s), and the
    epoch of its last result there (Tune's callbacks had it: the search recorded it)."""
    import posixpath

    found = {}
    for trial in _saved_unfinished_trials(experiment_path):
        latest = trial.checkpoint
        if latest is None:
            continue
        kept = [r.checkpoint.path for r in trial.run_metadata.checkpoint_manager.best_checkpoint_results]
        epoch = (trial.run_metadata.last_result or {}).get("epoch")
        found[posixpath.basename(posixpath.dirname(latest.path))] = (
            [posixpath.basename(p) for p in kept], posixpath.basename(latest.path),
            int(epoch) if isinstance(epoch, (int, float)) else None)
    return found


# Tune's saved state of an experiment: `experiment_state-<session>.json` beside the searcher's
# and the callbacks' `*-<session>.pkl` (one session per run of the Tuner), and tuner.pkl. The
# driver writes them into a staging folder of its Ray session's directory (each file under a
# temporary name, then renamed: whole there), then copies that folder to storage with
# pyarrow's copy_files, which writes each file in place: a driver killed mid-copy leaves a file
# on storage cut short (CI saw an empty experiment_state, and `--resume` fail to parse it).
TUNE_STATE_PREFIX = "experiment_state-"


def driver_staging_copies(experiment_dir_name: str, state_file: str) -> list[str]:
    """The staging folders, on this machine, of Tune drivers that saved `state_file` for an
    experiment of that name (`StorageContext.experiment_driver_staging_path`:
    `<Ray's temp dir>/session_*/artifacts/<timestamp>/<name>/driver_artifacts`), newest first.
    Ray keeps a session's directory after its processes end. The timestamp folder is the
    storage context's, the file's the controller's: taken apart by a second, so any is looked at."""
    import glob

    import ray
    from ray._common.utils import get_default_system_temp_dir

    roots = {os.path.join(get_default_system_temp_dir(), "ray")}
    if ray.is_initialized():  # a Ray started with its own temp dir
        roots.add(os.path.dirname(ray._private.worker._global_node.get_session_dir_path()))
    # realpath: one folder once, not again through the `session_latest` link.
    found = {os.path.realpath(os.path.dirname(f)) for root in roots for f in glob.glob(os.path.join(
        glob.escape(root), "session_*", "artifacts", "*", glob.escape(experiment_dir_name), "driver_artifacts",
        glob.escape(state_file)))}
    return sorted(found, key=os.path.getmtime, reverse=True)


def trial_storage() -> tuple[Any, str, Any]:
    """Inside a Tune trial: its storage filesystem, its directory there, and the storage
    context whose `current_checkpoint_index` names the trial's next checkpoint directory
    (`ray.train._internal.session.get_storage`, a DeveloperAPI: Tune's public context gives the
    trial's directory as a local path only, no filesystem, and no index)."""
    from ray.train._internal.session import get_storage

    storage = get_storage()
    return storage.storage_filesystem, storage.trial_fs_path, storage
