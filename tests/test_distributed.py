"""Data-parallel trials on Ray Train: the same task code, a TorchTrainer worker group per trial."""

from __future__ import annotations

import glob
import os

import pytest

import torch
from mlflow import MlflowClient

from raysweep.errors import SearchFailed
from raysweep.search import run_search
from raysweep.spec import validate
from tests.conftest import make_raw
from tests.user_tasks import working_dirs

LR = {"type": "uniform", "low": 0.005, "high": 0.02}


def _spec(**changes):
    return validate(make_raw(**{"resources.workers_per_trial": 2, "scheduler.type": "fifo", "space": {"lr": LR}, "fixed": {"batch_size": 64}, **changes}))


def _steps(client, run_id, metric="val_loss"):
    return [m.step for m in client.get_metric_history(run_id, metric)]


def _train_helper_actors() -> int:
    from ray.util.state import list_actors

    return sum(len(list_actors(filters=[("class_name", "=", name)], limit=10_000))
               for name in ("DatasetManager", "PreemptionWatcher"))


def test_ddp_averages_gradients_so_ranks_stay_identical(ray_session, tmp_path, tracking_uri):
    spec = _spec(**{
        "name": "ddp-sync", "task": "tests.user_tasks:ddp_sync", "max_epochs": 1, "search.num_samples": 1,
        "fixed": {"out_dir": str(tmp_path)},
    })
    run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, p0 in rank0["synced"].items():
        assert torch.equal(p0, rank1["synced"][name]), name  # one model, replicated
    # Without gradient averaging the same start and different shards give different models,
    # so the equality above is DDP's doing, not a model that never moved.
    assert any(not torch.equal(p, rank1["bare"][n]) for n, p in rank0["bare"].items())
    assert any(not torch.equal(p, rank0["bare"][n]) for n, p in rank0["synced"].items())


def test_a_killed_worker_restarts_from_its_checkpoint_each_epoch_logged_once_and_billed_as_trained(
        ray_session, tmp_path, tracking_uri):
    """Rank 1 dies after epoch 3, which saved no checkpoint (`checkpoint.every: 2`): the
    restarted group resumes from epoch 2's and trains epoch 3 again. MLflow keeps one point per
    epoch; the cost metrics bill the five epochs trained, and the worker group's start-up.
    (The in-process trial's restart: tests/test_cost.py.)"""
    spec = _spec(**{
        "name": "ddp-fault", "task": "tests.user_tasks:KillOnce", "max_epochs": 4, "search.num_samples": 1,
        "failures.max_failures": 1, "checkpoint.every": 2,
        "fixed": {"out_dir": str(tmp_path), "kill_epoch": 3, "kill_rank": 1, "hidden": 32, "batch_size": 64},
    })
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    (trial,) = result.trials
    assert (tmp_path / "killed").exists()
    assert trial["status"] == "finished" and trial["epochs"] == 4
    starts = [torch.load(f, weights_only=True)["resumed_epoch"] for f in glob.glob(str(tmp_path / "start-*.pt"))]
    # Two workers started fresh, then the restarted pair resumed from the epoch-2 checkpoint.
    assert sorted(starts, key=lambda e: e or 0) == [None, None, 2, 2]
    client = MlflowClient(tracking_uri)
    for metric in ("val_loss", "val_accuracy", "train_loss"):
        assert _steps(client, trial["run_id"], metric) == [1, 2, 3, 4], metric
    assert result.best["metrics"]["val_accuracy"] > 0.8
    history = {m: {p.step: p.value for p in client.get_metric_history(trial["run_id"], m)}
               for m in ("samples", "flops", "cost_wall_s", "epoch_time_s")}
    per_epoch = history["samples"][1]
    # Epochs 1, 2, 3, the kill, epoch 3 again from the epoch-2 checkpoint, then 4: five billed.
    assert history["samples"][4] == trial["metrics"]["samples"] == result.totals["samples"] == 5 * per_epoch
    assert history["flops"][4] == pytest.approx(5 * history["flops"][1])
    assert history["cost_wall_s"][4] > history["cost_wall_s"][3]
    # The worker group's start-up is billed: seconds before its first epoch.
    assert history["cost_wall_s"][1] > history["epoch_time_s"][1] + 1.0


def test_four_asha_trials_of_two_workers_on_four_cpus_finish(ray_session, tmp_path, tracking_uri):
    """No trial may wait on resources held by finished or stopped trials (a Train V2 + Tune leak).

    Two trials of two workers fill the four CPUs: with the leak, the third waited forever. Four
    make a second wave, which ASHA judges against the first's rung values (twelve trials took
    211 s here and six 78 s, for nothing more; four 52 s). And no worker loads the digits
    itself: the driver loaded them once and shared them (CountsReports' `loads`); the workers
    train in the directory Ray started in, not Ray Train's run folder (relative paths work)."""
    spec = _spec(**{
        "name": "ddp-asha", "max_epochs": 3, "search.num_samples": 4, "search.max_concurrent": None,
        "scheduler.type": "asha", "checkpoint.keep": 1, "task": "tests.user_tasks:CountsReports",
        "fixed": {"batch_size": 64, "out_dir": str(tmp_path)},
    })
    helpers_before = _train_helper_actors()
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    # Groups with no datasets start no DatasetManager, and a local Ray no preemption watcher
    # (ray_internals: one process of about 200 MB each, per trial).
    assert _train_helper_actors() == helpers_before
    statuses = [t["status"] for t in result.trials]
    assert len(statuses) == 4 and set(statuses) <= {"finished", "stopped"}
    assert "stopped" in statuses  # ASHA acted on the reduced validation metric
    assert result.best["metrics"]["val_accuracy"] > 0.7  # learning, not just running
    client = MlflowClient(tracking_uri)
    for trial in result.trials:  # one point per epoch, not one per worker
        assert _steps(client, trial["run_id"]) == list(range(1, trial["epochs"] + 1))
        assert trial["metrics"]["loads"] == 0
    assert working_dirs(tmp_path) == {os.getcwd()}
    # The best trial's Ray Train checkpoint reached the driver: its model scored the test split.
    assert 0.7 < result.test_metrics["test_accuracy"] <= 1.0
    assert "best_checkpoint" in {a.path for a in client.list_artifacts(result.parent_run_id)}


def test_a_plain_ray_train_loop_is_searched_and_logged(ray_session, tmp_path, tracking_uri):
    spec = _spec(**{
        "name": "byo-loop", "task": "tests.user_tasks:ray_train_loop", "max_epochs": 3, "search.num_samples": 2,
        "search.max_concurrent": 2, "metric": "val_accuracy", "mode": "max",
        "space": {"lr": {"type": "loguniform", "low": 0.003, "high": 0.03}}, "fixed": {"epochs": 3},
        "resources.poll_interval_s": 0.03,
    })
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    assert [t["status"] for t in result.trials] == ["finished", "finished"]
    assert result.best["value"] > 0.8
    client = MlflowClient(tracking_uri)
    for trial in result.trials:  # epochs numbered for a loop that reports none
        assert _steps(client, trial["run_id"], "val_accuracy") == [1, 2, 3]
        # The spec's poll interval reached Ray Train (its controller, and from it the workers).
        polls = client.get_metric_history(trial["run_id"], "ray_train_poll_s")
        assert [m.value for m in polls] == [0.03] * 3



def test_a_plain_ray_train_loop_without_the_metric_fails_its_trial_not_the_search(ray_session, tmp_path, tracking_uri):
    spec = _spec(**{
        "name": "byo-no-metric", "task": "tests.user_tasks:ray_train_loop_wrong_metric", "max_epochs": 2,
        "search.num_samples": 1, "space": {"lr": {"type": "loguniform", "low": 0.003, "high": 0.03}},
        "fixed": {"epochs": 2}, "resources.poll_interval_s": 0.03,
    })
    with pytest.raises(SearchFailed) as failed:
        run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    (trial,) = failed.value.result.trials
    assert trial["status"] == "failed" and "'val_loss'" in trial["error"] and "loss" in trial["error"]
    run = MlflowClient(tracking_uri).get_run(trial["run_id"])
    assert run.info.status == "FAILED" and "'val_loss'" in run.data.tags["raysweep.error"]
