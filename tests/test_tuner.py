"""The Tune side of a search, without running one: what Tune gets back when it unpickles the
search's stopper."""

from __future__ import annotations

import json
import pickle

from ray import tune

from raysweep.book import TrialBook
from raysweep.spec import validate
from raysweep.tuner import StopAfterFailures
from tests.conftest import make_raw


def test_an_unpickled_stopper_is_the_live_search_s():
    """Tune saves the stopper with its experiment state and, on --resume, puts the unpickled one
    in place of the one it was given. It must count this driver's failures and spend, not a
    stale copy of the dead driver's book."""
    spec = validate(make_raw(**{"search.max_failed_trials": 2}))
    saved = pickle.dumps(StopAfterFailures(TrialBook(spec), 2))  # the dead driver's
    book = TrialBook(spec)
    live = StopAfterFailures(book, 2)  # the resumed driver's
    assert pickle.loads(saved) is live
    assert pickle.loads(pickle.dumps(live)).book is book


def test_a_stopper_unpickled_where_no_search_runs_stops_nothing(monkeypatch):
    import raysweep.tuner as tuner

    saved = pickle.dumps(StopAfterFailures(TrialBook(validate(make_raw())), 1))
    monkeypatch.setattr(tuner, "_live_stopper", None)
    assert isinstance(pickle.loads(saved), tune.stopper.NoopStopper)


def _probe_search(tmp_path, name):
    from raysweep.search import run_search

    spec = validate(make_raw(**{
        "name": name, "task": "tests.user_tasks:process_probe", "max_epochs": 1, "search.num_samples": 2,
        "search.algorithm": "random", "tracking.enabled": False, "fixed": {"out_dir": str(tmp_path)},
        "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}}}))
    run_search(spec, storage=str(tmp_path / "results"))
    return [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]


def test_trials_of_a_ray_raysweep_started_inherit_tunes_variables_without_a_runtime_env(ray_session, tmp_path,
                                                                                        monkeypatch):
    from ray.tune.execution import class_cache

    before = dict(class_cache.DEFAULT_ENV_VARS), set(class_cache.ENV_VARS_TO_PROPAGATE)
    # No runtime env (so Ray may start them in the processes it keeps idle), Tune's variables all the same.
    inherited = {"PL_DISABLE_FORK": "1", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                 "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": None}
    assert _probe_search(tmp_path / "a", "probe-a") == [{"runtime_env_vars": {}, "environ": inherited}] * 2
    # A variable of Tune's set since Ray started is not inherited: Tune's runtime env carries it.
    monkeypatch.setenv("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    assert _probe_search(tmp_path / "b", "probe-b") == [{
        "runtime_env_vars": {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"},
        "environ": {**inherited, "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}}] * 2
    assert (class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE) == before  # Tune's, as they were


def test_tunes_state_saves_for_trials_checkpoints_are_spaced_its_schedule_and_end_kept(tmp_path):
    """Tune forced a save of its whole state, waiting for its copy to storage, each time a
    trial registered `checkpoint.keep` checkpoints: with keep 2 and a checkpoint an epoch, about
    one an epoch, in the loop that takes the reports (ray_internals.state_saves_spaced). Spaced,
    the forced save waits for the spacing since the last save, then comes with the trial's next
    checkpoint; Tune's schedule and its save at the end stay, and so does Tune's way outside."""
    import time
    from types import SimpleNamespace

    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from raysweep.ray_internals import state_saves_spaced

    # Tune's manager as it is; its storage (a Ray session's staging folder) stood in for.
    syncer = SimpleNamespace(sync_up=lambda source, destination: True, wait=lambda: None)
    storage = SimpleNamespace(experiment_driver_staging_path=str(tmp_path / "staged"),
                              experiment_fs_path=str(tmp_path / "e"), syncer=syncer)

    def saves(spacing_s: float = 0.0) -> list[str]:
        done = []
        manager = _ExperimentCheckpointManager(storage=storage, checkpoint_period="auto",
                                               sync_every_n_trial_checkpoints=2)
        manager.sync_up_experiment_state(lambda: done.append("first"))  # then none for 10 s
        for n in range(1, 3):  # two checkpoints of a trial, at once
            manager.on_trial_checkpoint("trial")
            manager.sync_up_experiment_state(lambda n=n: done.append(f"checkpoint {n}"))
        time.sleep(spacing_s)
        manager.on_trial_checkpoint("trial")
        manager.sync_up_experiment_state(lambda: done.append("checkpoint 3"))
        manager.sync_up_experiment_state(lambda: done.append("the end"), force=True, wait=True)
        return done

    assert saves() == ["first", "checkpoint 2", "the end"]  # Tune's: one at each second checkpoint
    with state_saves_spaced(0.5):
        assert saves(0.6) == ["first", "checkpoint 3", "the end"]  # after the spacing, at the next one
        assert saves() == ["first", "the end"]  # within it: none
    assert saves() == ["first", "checkpoint 2", "the end"]  # Tune's again after


def test_trial_processes_whose_trials_end_together_all_wait_for_the_next_trials():
    """Tune keeps one ended trial's process for reuse when no trial is pending, and stops any
    other: in a search of short trials, one process then ran the trials one at a time while a
    new one started and was stopped again (ray_internals.keep_trial_actors). The cache is
    built the way TuneController builds it."""
    from ray.tune.execution import tune_controller

    from raysweep.ray_internals import keep_trial_actors

    resources = tune.PlacementGroupFactory([{"CPU": 1}])
    tunes = tune_controller._ObjectCache(may_keep_one=True)
    assert [tunes.cache_object(resources, actor) for actor in ("a", "b")] == [True, False]  # b stopped
    with keep_trial_actors():
        cache = tune_controller._ObjectCache(may_keep_one=True)
        assert [cache.cache_object(resources, actor) for actor in ("a", "b")] == [True, True]
        assert list(cache.flush_cached_objects()) == []  # each step of Tune's loop: both stay
        assert cache.pop_cached_object(resources) == "a"  # the next trial takes one
        assert list(cache.flush_cached_objects(force_all=True)) == ["b"]  # the search is over
    assert type(tune_controller._ObjectCache(may_keep_one=True)) is type(tunes)  # Tune's again after
