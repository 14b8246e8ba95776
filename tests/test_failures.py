"""Bad trials are contained: a diverged or raising trial ends FAILED with its reason in MLflow,
and `search.max_failed_trials` failures stop the search with a summary of what finished."""

from __future__ import annotations

import json
import pickle
import re
from types import SimpleNamespace

import pytest
import torch
from mlflow import MlflowClient
from raysweep.book import FAILED, FINISHED, STOPPED, TrialBook
from raysweep.failures import (
    DIED_HINT,
    EXCEPTION,
    NON_FINITE,
    OOM,
    OOM_HINT,
    NonFiniteLoss,
    no_space,
    one_line,
    read_trial_error,
)
from raysweep.errors import SearchFailed, TooManyFailures
from raysweep.search import run_search, search_failure
from raysweep.spec import validate

from tests.conftest import make_raw
from raysweep.context import LocalContext
from tests.user_tasks import starts

DIVERGED = "NonFiniteLoss: train_loss became nan at epoch 2"


def _spec(**changes):
    return validate(make_raw(**{"scheduler.type": "fifo", "search.algorithm": "random", **changes}))


def _child_runs(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return {r.data.tags["raysweep.trial_id"]: r for r in runs if r.data.tags.get("raysweep.kind") == "trial"}


def _steps(client, run_id, metric):
    return [m.step for m in client.get_metric_history(run_id, metric)]


def _traceback(client, run_id):
    return open(client.download_artifacts(run_id, "error/traceback.txt")).read()


# --------------------------------------------------------------------------- without Ray


def test_a_nan_loss_raises_before_its_epoch_is_reported():
    from raysweep.tasks.digits import DigitsMLP

    task = DigitsMLP()
    task.loss_fn = lambda out, y, reduction="mean": torch.nn.functional.cross_entropy(out, y, reduction=reduction) * torch.nan
    ctx = LocalContext(max_epochs=3, seed=0, metric="val_loss")
    with pytest.raises(NonFiniteLoss, match="^train_loss became nan at epoch 1$"):
        task.train({"lr": 0.01, "batch_size": 256, "hidden": 8}, ctx)
    assert ctx.reports == []


@pytest.mark.parametrize(("metrics", "message"), [
    ({"val_loss": float("inf"), "epoch": 4}, "val_loss became inf at epoch 4"),
    ({"val_accuracy": 0.5, "loss": -float("inf"), "epoch": 2}, "loss became -inf at epoch 2"),
    ({"val_accuracy": float("nan")}, "val_accuracy became nan at epoch 1"),  # the spec's metric
])
def test_non_finite_losses_and_spec_metric_are_refused(metrics, message):
    ctx = LocalContext(max_epochs=4, seed=0, metric="val_accuracy")
    with pytest.raises(NonFiniteLoss, match=f"^{re.escape(message)}$"):
        ctx.report({"val_accuracy": 0.5, **metrics})


def test_other_non_finite_metrics_are_reported():
    ctx = LocalContext(max_epochs=4, seed=0, metric="val_loss")
    ctx.report({"val_loss": 0.5, "grad_norm": float("inf")})
    assert ctx.reports[0]["grad_norm"] == float("inf")


def _errored_trial(tmp_path, exc):
    """A trial as Tune leaves an errored one: the exception pickled, its text in error.txt."""
    (tmp_path / "error.pkl").write_bytes(pickle.dumps(exc))
    (tmp_path / "error.txt").write_text(f"Failure # 1\nTraceback (most recent call last):\n{type(exc).__name__}: {exc}\n")
    return SimpleNamespace(pickled_error_file=str(tmp_path / "error.pkl"), error_file=str(tmp_path / "error.txt"))


@pytest.mark.parametrize(("exc", "kind"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), OOM),
    # What torch before 1.13 raised, and what CUDA libraries raise.
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), OOM),
    (RuntimeError("CUDA error: out of memory"), OOM),
    (NonFiniteLoss("val_loss became nan at epoch 3"), NON_FINITE),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory"), EXCEPTION),
])
def test_failures_are_classified(tmp_path, exc, kind):
    error = read_trial_error(_errored_trial(tmp_path, exc))
    assert error.kind == kind
    assert error.line.startswith(f"{type(exc).__name__}: {exc}")
    assert error.line.endswith(f"({OOM_HINT})") == (kind == OOM)
    assert error.traceback.startswith("Failure # 1\nTraceback")


def test_an_oom_line_keeps_its_hint_when_the_message_is_cut(tmp_path):
    error = read_trial_error(_errored_trial(tmp_path, RuntimeError("CUDA out of memory. " + "x" * 2000)))
    assert len(error.line) <= 500 and error.line.endswith(f"({OOM_HINT})")


def test_only_the_error_text_still_names_the_failure(tmp_path):
    trial = _errored_trial(tmp_path, NonFiniteLoss("train_loss became inf at epoch 7"))
    trial.pickled_error_file = None  # Tune pickles only Ray's own exception types
    error = read_trial_error(trial)
    assert (error.line, error.kind) == ("NonFiniteLoss: train_loss became inf at epoch 7", NON_FINITE)


def test_too_many_failures_message_summarises_what_finished():
    spec = _spec(**{"search.max_failed_trials": 2})
    book = TrialBook(spec)
    outcomes = [(FINISHED, 0.5), (FAILED, None), (STOPPED, 0.9), (FINISHED, 0.123), (FAILED, None)]
    for number, (status, value) in enumerate(outcomes, start=1):
        book.on_trial_start(0, [], SimpleNamespace(trial_id=f"t{number}", config={}))
        rec = book.records[f"t{number}"]
        rec.status, rec.value = status, value
        rec.error = f"ValueError: bad {number}" if status == FAILED else None
    failure = search_failure(spec, book)
    assert isinstance(failure, TooManyFailures)
    assert str(failure) == (
        "search stopped: 2 trials failed (search.max_failed_trials: 2); 2 finished, 1 stopped early; "
        "best val_loss 0.123 (trial 004); first error: ValueError: bad 2"
    )
    assert search_failure(_spec(**{"search.max_failed_trials": 3}), book) is None


def test_trials_running_when_the_search_stops_end_as_stopped_early(tracking_uri):
    """Tune stops them without an on_trial_complete: the book and MLflow settle them at the end."""
    from raysweep.tracking import MLflowCallback, Tracker

    spec = _spec(name="cut-off", max_epochs=3)
    tracker = Tracker(tracking_uri, spec.experiment)
    book = TrialBook(spec)
    callbacks = [book, MLflowCallback(tracker, book, tracker.start_search(spec), spec, dict)]
    trials = [SimpleNamespace(trial_id=trial_id, config={"lr": 0.01}, checkpoint=None) for trial_id in ("done", "cut")]
    for trial in trials:
        for callback in callbacks:
            callback.on_trial_start(0, [], trial)
        for epoch in (1, 2, 3) if trial.trial_id == "done" else (1,):
            for callback in callbacks:
                callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": 1.0 / epoch})
    for callback in callbacks:
        callback.on_trial_complete(0, [], trials[0])
    assert book.records["cut"].status == "running"
    for callback in callbacks:
        callback.on_experiment_end(trials)
    assert (book.records["done"].status, book.records["cut"].status) == (FINISHED, STOPPED)
    cut = tracker.client.get_run(book.records["cut"].run_id)
    assert cut.info.status == "FINISHED" and cut.data.tags["raysweep.stopped_early"] == "true"


def test_the_best_trial_is_one_with_a_checkpoint_when_the_search_cuts_trials_off():
    """A budget or max_failed_trials stops the running trials without an on_trial_complete, and
    drops a save in flight: the book keeps each checkpoint Tune registered (on_checkpoint), takes
    Tune's for the rest, and the best trial is the best that has something to load."""
    book = TrialBook(_spec(name="cut-off", max_epochs=3))
    unsaved, cut, done = (SimpleNamespace(trial_id=t, config={"lr": 0.01}, checkpoint=None)
                          for t in ("unsaved", "cut", "done"))
    for trial, losses in ((unsaved, [0.1]), (cut, [0.5, 0.3]), (done, [0.9, 0.8, 0.7])):
        book.on_trial_start(0, [], trial)
        for epoch, loss in enumerate(losses, start=1):
            book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": loss})
            if trial is cut and epoch == 1:  # its epoch-2 save was in flight when the search stopped
                book.on_checkpoint(0, [], trial, checkpoint="cut-epoch-1")
    done.checkpoint = "done-epoch-3"
    book.on_trial_complete(0, [], done)
    assert book.best().trial_id == "cut"  # best value with a checkpoint, before and after the end
    book.on_experiment_end([unsaved, cut, done])
    assert [r.trial_id for r in book.ranked()] == ["unsaved", "cut", "done"]  # the leaderboard is by value
    assert book.best().trial_id == "cut" and book.best().checkpoint == "cut-epoch-1"
    assert book.records["unsaved"].checkpoint is None

    # Tune's own record of a cut-off trial's last checkpoint, when no on_checkpoint came.
    book = TrialBook(_spec(name="cut-off", max_epochs=3))
    book.on_trial_start(0, [], unsaved)
    book.on_trial_result(0, [], unsaved, {"epoch": 1, "val_loss": 0.1})
    unsaved.checkpoint = "unsaved-epoch-1"
    book.on_experiment_end([unsaved])
    assert book.best().checkpoint == "unsaved-epoch-1"

    # No trial has a checkpoint (a task that saves none): the best by value.
    book = TrialBook(_spec(name="no-checkpoints"))
    for trial_id, loss in (("a", 0.4), ("b", 0.2)):
        book.on_trial_start(0, [], SimpleNamespace(trial_id=trial_id, config={}))
        book.on_trial_result(0, [], SimpleNamespace(trial_id=trial_id), {"epoch": 1, "val_loss": loss})
    assert book.best().trial_id == "b"


# --------------------------------------------------------------------------- real searches


def test_diverged_trials_fail_once_without_retries_and_the_search_goes_on(ray_session, tmp_path, tracking_uri):
    spec = _spec(**{
        "name": "diverges", "task": "tests.user_tasks:DivergesAfter", "max_epochs": 3, "search.num_samples": 4,
        "failures.max_failures": 2, "space": {"lr": {"type": "choice", "values": [0.003, 0.03]}},
        "fixed": {"hidden": 16, "batch_size": 128, "diverge_above": 0.01, "nan_epoch": 2, "out_dir": str(tmp_path)},
    })
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = _child_runs(client, "diverges")
    assert {t["config"]["lr"] for t in result.trials} == {0.003, 0.03}  # both kinds were drawn
    for trial in result.trials:
        run = runs[trial["trial_id"]]
        if trial["config"]["lr"] == 0.003:
            assert (trial["status"], trial["epochs"], run.info.status) == (FINISHED, 3, "FINISHED")
            continue
        assert (trial["status"], trial["error"], trial["failure"]) == (FAILED, DIVERGED, NON_FINITE)
        assert run.info.status == "FAILED"
        assert run.data.tags["raysweep.error"] == DIVERGED and run.data.tags["raysweep.failure"] == NON_FINITE
        for metric in ("train_loss", "val_loss", "epoch"):  # up to the last finite epoch, once each
            assert _steps(client, run.info.run_id, metric) == [1], metric
    # Two starts per diverged trial: Tune had queued one retry before raysweep saw the error
    # (it diverged again); not the max_failures (2) of them.
    assert starts(tmp_path, 0.03) == 2 * sum(t["config"]["lr"] == 0.03 for t in result.trials)
    assert result.best["config"]["lr"] == 0.003


def test_raising_trials_fail_with_their_traceback_after_their_retries(ray_session, tmp_path, tracking_uri, capfd):
    spec = _spec(**{
        "name": "raises", "task": "tests.user_tasks:raises_for_some", "max_epochs": 2, "search.num_samples": 6,
        "failures.max_failures": 1,
        "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.9},
                  "fail": {"type": "choice", "values": ["none", "value_error", "oom"]}},
        "fixed": {"out_dir": str(tmp_path)},
    })
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = _child_runs(client, "raises")
    assert {t["config"]["fail"] for t in result.trials} == {"none", "value_error", "oom"}
    for trial in result.trials:
        run, fail, lr = runs[trial["trial_id"]], trial["config"]["fail"], trial["config"]["lr"]
        if fail == "none":
            assert (trial["status"], run.info.status, starts(tmp_path, lr)) == (FINISHED, "FINISHED", 1)
            assert "error" not in {a.path for a in client.list_artifacts(run.info.run_id)}
            continue
        assert trial["status"] == FAILED and run.info.status == "FAILED"
        assert starts(tmp_path, lr) == 2  # retried once (failures.max_failures: 1), then failed
        assert _steps(client, run.info.run_id, "val_loss") == [1]
        tags, traceback = run.data.tags, _traceback(client, run.info.run_id)
        if fail == "value_error":
            assert tags["raysweep.error"] == f"ValueError: shard of lr={lr:.3g} is corrupt"
            assert tags["raysweep.failure"] == EXCEPTION
            assert "in _read_shard" in traceback and "in raises_for_some" in traceback
        else:
            assert tags["raysweep.error"] == (
                "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                f"capacity of 79.10 GiB ({OOM_HINT})"
            )
            assert tags["raysweep.failure"] == OOM
            assert "torch.OutOfMemoryError: CUDA out of memory" in traceback
        assert traceback.count("Failure # ") == 2  # both attempts' errors
    # On the console: one line per failed trial; Tune's traceback of each stays in MLflow.
    out, err = capfd.readouterr()
    failed = [t for t in result.trials if t["status"] == FAILED]
    for trial in failed:
        number = [t["trial_id"] for t in result.trials].index(trial["trial_id"]) + 1
        assert f"trial {number:03d} failed after 1 epoch: {trial['error']}; traceback: error/traceback.txt" in out
    assert out.count(" failed after ") == len(failed)
    assert "Trial task failed" not in err and "Traceback" not in err and "Trials did not complete" not in err


def test_a_task_calling_sys_exit_fails_its_trial_saying_so_and_numpy_or_tensor_metrics_count(
        ray_session, tmp_path, tracking_uri):
    """sys.exit() in a trial ended Ray's actor, reported as a process killed or out of memory;
    a search whose trials reported their metric as a NumPy float32 failed for want of it, and one
    reporting a tensor, on Tune's refusal."""
    spec = _spec(**{
        "name": "odd-habits", "task": "tests.user_tasks:odd_habits", "max_epochs": 2, "search.num_samples": 2,
        "space": {"exit": {"type": "choice", "values": [False, True]}},
        "fixed": {"lr": 0.05, "batch_size": 64, "hidden": 32},
    })
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    runs = _child_runs(MlflowClient(tracking_uri), "odd-habits")
    by_exit = {t["config"]["exit"]: t for t in result.trials}
    assert set(by_exit) == {False, True}, "the random sampler drew one value twice: change the seed"
    kept, exited = by_exit[False], by_exit[True]
    assert kept["status"] == FINISHED and kept["epochs"] == 2 and result.best["trial_id"] == kept["trial_id"]
    assert 0 < kept["metrics"]["val_loss"] < 3 and 0 < kept["metrics"]["train_loss"] < 3  # NumPy, tensor: both counted
    assert exited["status"] == FAILED and exited["epochs"] == 1
    line = "TaskExited: the task called sys.exit(3); a trial ends by returning, or fails by raising"
    assert exited["error"] == line and runs[exited["trial_id"]].data.tags["raysweep.error"] == line
    assert _steps(MlflowClient(tracking_uri), runs[kept["trial_id"]].info.run_id, "train_loss") == [1, 2]


def test_max_failed_trials_stops_the_search_and_keeps_what_finished(ray_session, tmp_path, tracking_uri, capsys):
    from raysweep.cli import main

    raw = make_raw(**{
        "name": "too-many-failures", "task": "tests.user_tasks:first_finishes", "max_epochs": 2,
        "search.num_samples": 6, "search.max_concurrent": 2, "search.max_failed_trials": 2,
        "search.algorithm": "random", "scheduler.type": "fifo",
        "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.9}}, "fixed": {"out_dir": str(tmp_path)},
    })
    (tmp_path / "spec.yaml").write_text(json.dumps(raw))  # JSON is YAML
    summary_path = tmp_path / "summary.json"
    code = main(["search", str(tmp_path / "spec.yaml"), "--tracking-uri", tracking_uri,
                 "--storage", str(tmp_path / "results"), "--summary-json", str(summary_path)])
    assert code == 1
    err = capsys.readouterr().err
    summary = json.loads(summary_path.read_text())
    trials = summary["trials"]
    statuses = [t["status"] for t in trials]
    assert statuses.count(FAILED) == 2 and statuses.count(FINISHED) == 1
    assert len(trials) < 6  # the rest never started
    (best,) = [t for t in trials if t["status"] == FINISHED]
    number = [t["trial_id"] for t in trials].index(best["trial_id"]) + 1
    message = (
        f"search stopped: 2 trials failed (search.max_failed_trials: 2); 1 finished, "
        f"{statuses.count(STOPPED)} stopped early; best val_loss {best['value']:.4g} (trial {number:03d}); "
        f"first error: RuntimeError: no data for lr="
    )
    assert err.startswith(f"raysweep: search failed: {message}") and err.count("\n") == 1
    assert summary["error"] == err.removeprefix("raysweep: search failed: ").strip()

    client = MlflowClient(tracking_uri)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["raysweep.error"] == summary["error"]
    assert parent.data.metrics["trials_failed"] == 2 and parent.data.metrics["trials_finished"] == 1
    assert parent.data.metrics["best_val_loss"] == pytest.approx(best["value"])
    assert parent.data.tags["raysweep.best_run_id"] == best["run_id"]
    children = _child_runs(client, "too-many-failures")
    assert len(children) == len(trials)
    assert {r.info.status for r in children.values()} <= {"FINISHED", "FAILED"}  # none left running
    for trial in trials:
        if trial["status"] == STOPPED:  # running when the search stopped
            assert children[trial["trial_id"]].data.tags["raysweep.stopped_early"] == "true"


def test_every_trial_failing_still_fails_the_search_with_the_first_error(ray_session, tmp_path, tracking_uri):
    spec = _spec(**{
        "name": "all-fail", "task": "tests.user_tasks:raises_for_some", "max_epochs": 2, "search.num_samples": 2,
        "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.9}}, "fixed": {"out_dir": str(tmp_path), "fail": "value_error"},
    })
    with pytest.raises(SearchFailed, match="^no trial reported a finite 'val_loss'; first error: ValueError: shard") as info:
        run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    assert not isinstance(info.value, TooManyFailures)
    parent = MlflowClient(tracking_uri).get_run(info.value.result.parent_run_id)
    assert parent.info.status == "FAILED" and parent.data.tags["raysweep.error"] == str(info.value)


def test_a_diverged_ray_train_trial_fails_without_restarting_its_workers(ray_session, tmp_path, tracking_uri):
    spec = _spec(**{
        "name": "ddp-diverges", "task": "tests.user_tasks:DivergesAfter", "max_epochs": 3, "search.num_samples": 1,
        "resources.workers_per_trial": 2, "failures.max_failures": 1,
        "space": {"lr": {"type": "choice", "values": [0.03]}},
        "fixed": {"hidden": 16, "batch_size": 128, "diverge_above": 0.01, "nan_epoch": 2, "out_dir": str(tmp_path)},
    })
    with pytest.raises(SearchFailed, match=f"first error: {DIVERGED}$"):
        run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    assert starts(tmp_path, 0.03) == 2  # one start per rank: the group was not restarted
    client = MlflowClient(tracking_uri)
    (run,) = _child_runs(client, "ddp-diverges").values()
    assert run.info.status == "FAILED"
    assert run.data.tags["raysweep.error"] == DIVERGED and run.data.tags["raysweep.failure"] == NON_FINITE
    assert _steps(client, run.info.run_id, "val_loss") == [1]
    traceback = _traceback(client, run.info.run_id)
    assert "in check_finite" in traceback  # the worker's own frames, from Ray Train's group error


def test_an_error_out_of_tune_fails_the_search_in_one_line_with_its_parent_failed(
        ray_session, tmp_path, tracking_uri, monkeypatch):
    """A Tune error (its own, or storage filling up under it) came out of `raysweep search` as a
    traceback, the parent run KILLED as after a Ctrl-C. Injected after a real round of trials."""
    from raysweep import tuner as tuner_module  # the search imports fit from it as it runs
    from raysweep.errors import SearchFailed

    def fit_then_fail(tuner):
        real_fit(tuner)
        raise RuntimeError("Tune could not save its experiment\nstate: disk full")

    real_fit = tuner_module.fit
    monkeypatch.setattr(tuner_module, "fit", fit_then_fail)
    spec = _spec(**{"name": "tune-error", "max_epochs": 1, "search.num_samples": 2})
    with pytest.raises(SearchFailed) as failed:
        run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    error = "RuntimeError: Tune could not save its experiment state: disk full"
    assert str(failed.value) == (f"the search stopped: {error}; what ran is recorded, and the trials' state "
                                 "saved (--resume continues the search once the cause is fixed)")
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tune-error")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`raysweep.kind` = 'search'")
    assert parent.info.status == "FAILED" and parent.data.tags["raysweep.error"] == error
    with open(client.download_artifacts(parent.info.run_id, "error/traceback.txt")) as f:
        assert "in fit_then_fail" in f.read()
    assert all(r.info.status != "RUNNING" for r in _child_runs(client, "tune-error").values())


def test_a_result_grid_tune_cannot_build_does_not_fail_a_search_that_ran():
    """Tune's Tuner.fit() ends by reading every errored trial's pickled error back into a
    ResultGrid; with the storage full a file was empty (EOFError), after all trials had ended."""
    from raysweep.ray_internals import RESULT_GRID_FILE, raised_building_results

    def raised_in(filename: str) -> BaseException:
        scope: dict = {}
        exec(compile("def read():\n    raise EOFError('Ran out of input')\n", filename, "exec"), scope)
        try:
            scope["read"]()
        except EOFError as exc:
            return exc
        raise AssertionError("no error")

    assert raised_building_results(raised_in(f"/site-packages/{RESULT_GRID_FILE}"))
    assert not raised_building_results(raised_in("/site-packages/ray/tune/execution/tune_controller.py"))
    # What `raysweep search` and `train` wrap Tuner.fit() in: the grid's error dropped, others raised.
    from raysweep.ray_internals import results_not_read

    with results_not_read():
        raise raised_in(f"/site-packages/{RESULT_GRID_FILE}")
    with pytest.raises(EOFError), results_not_read():
        raise raised_in("/site-packages/ray/tune/execution/tune_controller.py")


def test_a_data_error_raised_in_ray_data_is_the_trials_line_not_ray_datas_wrapper():
    """A streamed split's missing value, found in a trial: Ray Data raises it as a
    UserCodeException holding the task's traceback as text; the trial's line said only
    'UserCodeException: UDF failed to process a data block.'"""
    from raysweep.errors import DataError
    from raysweep.failures import _name_and_message, data_error

    line = "data.val: column 'mean_radius' has a missing value (an empty cell, NaN or inf): fill or drop those rows"
    text = ("ray::MapBatches(_ToXY)() (pid=1, ip=10.0.0.1)\n  File \"ingest.py\", line 338, in __call__\n"
            f"    raise DataError(...)\nraysweep.errors.DataError: {line}\n\nThe above exception was the direct cause "
            "of the following exception:\n\nray.exceptions.UserCodeException: UDF failed to process a data block.")
    assert data_error(text) == line and data_error("ValueError: something else") is None
    assert _name_and_message(None, text) == ("DataError", line)
    assert data_error(RuntimeError("wrapped")) is None
    try:
        try:
            raise DataError(line)
        except DataError as exc:
            raise RuntimeError("Ray Data's") from exc
    except RuntimeError as exc:
        assert data_error(exc) == line  # raised in this process, chained


def test_a_full_disk_is_named_however_it_is_wrapped():
    """A full disk as the OS, pyarrow (a trial's checkpoint), SQLite (MLflow's store, whose
    error quotes its SQL and parameters) and Tune (a traceback as text) each say it."""
    import errno
    import sqlite3

    assert no_space(OSError(errno.ENOSPC, "No space left on device", "/data/ckpt.pt")) == \
        "no space left on device: /data/ckpt.pt"
    assert no_space("OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device") == \
        "no space left on device"
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO tags ...]") \
                from inner
    except RuntimeError as outer:
        wrapped = outer
    assert no_space(wrapped) == "database or disk is full"
    assert one_line(wrapped) == "the disk is full (database or disk is full)"
    assert no_space(ValueError("lr must be positive")) is None and no_space(None) is None
    assert one_line(ValueError("lr must\n be positive")) == "ValueError: lr must be positive"


def _killed_ray_train_worker():
    from ray.exceptions import ActorDiedError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    return WorkerHealthCheckFailedError("A worker health check failed.", ActorDiedError())


@pytest.mark.parametrize("killed", ["trial process", "ray train worker"])
def test_a_killed_trial_process_says_what_may_have_killed_it_and_what_restarts_it(tmp_path, killed):
    """`kill -9` or the kernel's OOM killer: Ray says only that the actor died, or for a Ray
    Train worker that a health check failed."""
    from ray.exceptions import ActorDiedError

    exc = ActorDiedError() if killed == "trial process" else _killed_ray_train_worker()
    error = read_trial_error(_errored_trial(tmp_path, exc))
    assert error.kind == EXCEPTION
    assert error.line.startswith(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    assert error.line.endswith(f"({DIED_HINT})") and len(error.line) <= 500
    assert not read_trial_error(_errored_trial(tmp_path, RuntimeError("boom"))).line.endswith(f"({DIED_HINT})")
