"""Where MLflow data goes, and how the UI link is built."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep.tracking import resolve_tracking_uri, runs_url, trial_number, trial_run_name
from tests.conftest import ROOT


def test_precedence_flag_then_spec_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{Path(tmp_path).resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri() == "http://127.0.0.1:5001"
    assert resolve_tracking_uri(spec_uri="sqlite:////data/m.db") == "sqlite:////data/m.db"
    assert resolve_tracking_uri("http://mlflow:5000", "sqlite:////data/m.db") == "http://mlflow:5000"


def test_runs_url_opens_the_runs_tab():
    assert runs_url("sqlite:////x/mlflow.db", "3") == "http://127.0.0.1:5000/#/experiments/3/runs"
    assert runs_url("http://mlflow.team:5000/", "7") == "http://mlflow.team:5000/#/experiments/7/runs"


def test_trial_run_names_show_number_and_hyperparameters():
    name = trial_run_name(7, {"lr": 0.0031234, "batch_size": 64, "dropout": 0.25})
    assert name == "trial-007 lr=0.00312 batch_size=64 dropout=0.25"
    # ... read back by `raysweep report`, which shows trials by the number the console said
    assert trial_number(name) == 7 and trial_number(trial_run_name(1234, {})) == 1234
    assert trial_number("train lr=0.1") is None and trial_number("trial-x lr=1") is None and trial_number(None) is None


def test_a_restarted_trial_repeating_epochs_leaves_one_point_per_epoch(tracking_uri):
    """After a restart from an older checkpoint Tune reports the lost epochs again."""
    from types import SimpleNamespace

    from raysweep.book import TrialBook
    from raysweep.spec import validate
    from raysweep.tracking import MLflowCallback, Tracker
    from tests.conftest import make_raw

    spec = validate(make_raw())
    tracker = Tracker(tracking_uri, spec.experiment)
    parent = tracker.start_search(spec)
    book = TrialBook(spec)
    callback = MLflowCallback(tracker, book, parent, spec, dict)
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.01})
    book.on_trial_start(0, [], trial)
    callback.on_trial_start(0, [], trial)
    for epoch, loss in [(1, 0.9), (2, 0.8), (3, 0.7), (2, 0.81), (3, 0.71), (4, 0.6)]:
        book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": loss})
        callback.on_trial_result(0, [], trial, {})
    callback.flush()  # epochs arriving within FLUSH_INTERVAL_S of a write wait in the callback
    history = tracker.client.get_metric_history(book.records["t1"].run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]


def test_a_trial_ending_on_a_repeated_epoch_leaves_its_whole_cost_in_mlflow(tracking_uri):
    """A resumed trial whose last epoch MLflow already holds says that epoch again from a new
    process: its start-up was paid for, so the run's latest cost is the ledger's total, as in
    the search's summary (`raysweep report` reads it from MLflow)."""
    from types import SimpleNamespace

    from raysweep.book import TrialBook
    from raysweep.cost import SEGMENT_KEY
    from raysweep.spec import validate
    from raysweep.tracking import MLflowCallback, Tracker
    from tests.conftest import make_raw

    spec = validate(make_raw())
    tracker = Tracker(tracking_uri, spec.experiment)
    book = TrialBook(spec)
    callback = MLflowCallback(tracker, book, tracker.start_search(spec), spec, dict)
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.01})
    book.on_trial_start(0, [], trial)
    callback.on_trial_start(0, [], trial)
    # Two epochs from the first process (segment 1), then the second one's repeat of epoch 2.
    for epoch, segment, hours in [(1, 1, 0.5), (2, 1, 1.0), (2, 2, 0.25)]:
        book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": 1.0 / epoch, SEGMENT_KEY: segment,
                                            "cost_device_hours": hours})
        callback.on_trial_result(0, [], trial, {})
    callback.on_trial_complete(0, [], trial)
    callback.drain()  # the callback's writer has made its writes
    client, run_id = tracker.client, book.records["t1"].run_id
    assert client.get_run(run_id).data.metrics["cost_device_hours"] == 1.25 == book.records["t1"].metrics["cost_device_hours"]
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2]  # still one point per epoch


def test_report_on_a_running_search_counts_running_trials_and_their_cost_so_far(tracking_uri):
    """What the driver has written mid-search: a RUNNING parent, a RUNNING and a finished child."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from raysweep.book import TrialBook
    from raysweep.report import build_report
    from raysweep.spec import validate
    from raysweep.tracking import MLflowCallback, Tracker
    from tests.conftest import make_raw

    spec = validate(make_raw(**{"name": "running-search"}))
    tracker = Tracker(tracking_uri, spec.experiment)
    parent = tracker.start_search(spec)
    book = TrialBook(spec)
    callback = MLflowCallback(tracker, book, parent, spec, dict)
    for trial_id, losses in (("a", [0.9, 0.5]), ("b", [0.8])):
        trial = SimpleNamespace(trial_id=trial_id, config={"lr": 0.01})
        book.on_trial_start(0, [], trial)
        callback.on_trial_start(0, [], trial)
        for epoch, loss in enumerate(losses, start=1):
            book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": loss, "cost_usd": 0.01 * epoch})
            callback.on_trial_result(0, [], trial, {})
    book.records["a"].status = "stopped"
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="a"))
    callback.drain()

    report = build_report(MlflowClient(tracking_uri), "running-search")
    assert report["status"] == "RUNNING"
    assert report["counts"] == {"running": 1, "finished": 0, "stopped": 1, "failed": 0}
    assert report["best"]["trial_id"] == "a" and report["best"]["value"] == 0.5
    assert report["totals"]["cost_usd"] == pytest.approx(0.03)  # each trial's latest, summed
    assert report["totals"]["epochs_run"] == 3


def _one_trial(tracking_uri, **changes):
    """A tracker on SQLite, a book and the MLflow callback, with trial t1 started."""
    from types import SimpleNamespace

    from raysweep.book import TrialBook
    from raysweep.spec import validate
    from raysweep.tracking import MLflowCallback, Tracker
    from tests.conftest import make_raw

    spec = validate(make_raw(**changes))
    tracker = Tracker(tracking_uri, spec.experiment)
    book = TrialBook(spec)
    callback = MLflowCallback(tracker, book, tracker.start_search(spec), spec, dict)
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.01}, checkpoint=None)
    book.on_trial_start(0, [], trial)
    callback.on_trial_start(0, [], trial)
    callback.drain()
    return tracker, book, callback, trial


def _report(book, callback, trial, epoch, loss):
    """One epoch's report, as Tune's loop makes it; then the callback's writer catches up."""
    book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": loss, "train_loss": 2 * loss})
    callback.on_trial_result(0, [], trial, {})
    callback.drain()


def test_epochs_arriving_within_the_flush_interval_wait_then_land_with_their_steps(tracking_uri):
    from raysweep.tracking import FLUSH_INTERVAL_S

    tracker, book, callback, trial = _one_trial(tracking_uri, max_epochs=6)
    rec = book.records["t1"]
    losses = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}
    for epoch, loss in losses.items():  # well within FLUSH_INTERVAL_S of each other
        _report(book, callback, trial, epoch, loss)
    history = tracker.client.get_metric_history(rec.run_id, "val_loss")
    assert [m.step for m in history] == [1]  # the first epoch at once, the rest buffered
    assert rec.logged_epoch == 1  # buffered epochs are not claimed as logged (--resume reads it)

    time.sleep(FLUSH_INTERVAL_S)
    _report(book, callback, trial, 5, 0.5)  # a second after the last write: all five go
    assert rec.logged_epoch == 5
    _report(book, callback, trial, 6, 0.4)
    book.on_trial_complete(0, [], trial)
    callback.on_trial_complete(0, [], trial)  # the trial's end writes what waits, then ends the run
    callback.drain()

    run = tracker.client.get_run(rec.run_id)
    assert run.info.status == "FINISHED" and rec.logged_epoch == 6
    for key, scale in (("val_loss", 1), ("train_loss", 2)):
        points = sorted((m.step, m.value) for m in tracker.client.get_metric_history(rec.run_id, key))
        assert points == [(e, pytest.approx(scale * v)) for e, v in {**losses, 5: 0.5, 6: 0.4}.items()]
    stamps = [m.timestamp for m in sorted(tracker.client.get_metric_history(rec.run_id, "val_loss"), key=lambda m: m.step)]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= FLUSH_INTERVAL_S * 1000  # when each epoch arrived


def test_an_interrupt_flushes_buffered_epochs(tracking_uri):
    tracker, book, callback, trial = _one_trial(tracking_uri)
    rec = book.records["t1"]
    for epoch in (1, 2, 3):
        _report(book, callback, trial, epoch, 1.0 / epoch)
    callback.flush()  # run_search on Ctrl-C, before it ends the parent run KILLED
    assert [m.step for m in tracker.client.get_metric_history(rec.run_id, "val_loss")] == [1, 2, 3]
    assert rec.logged_epoch == 3


def test_buffered_epochs_saved_with_tunes_state_are_written_when_a_resume_restores_it(tracking_uri):
    """The driver dies with epochs buffered: Tune's saved state holds them, `--resume` writes them."""
    import pickle

    from raysweep.book import TrialBook
    from raysweep.tracking import MLflowCallback

    tracker, book, callback, trial = _one_trial(tracking_uri)
    rec = book.records["t1"]
    for epoch in (1, 2, 3):
        _report(book, callback, trial, epoch, 1.0 / epoch)
    saved = pickle.loads(pickle.dumps({0: book.get_state(), 1: callback.get_state()}))  # Tune's save
    assert saved[0]["records"]["t1"].logged_epoch == 1  # only epoch 1 was written
    assert [p[0] for p in saved[1]["buffer"]["t1"]] == [2, 3]
    # the driver dies here; a resumed one reads the MLflow history, then Tune restores callbacks
    resumed_book = TrialBook(book.spec)
    resumed_book.set_state(saved[0])
    tracker.reopen_search(callback.parent_run_id, resumed_book.records, "val_loss")
    resumed = MLflowCallback(tracker, resumed_book, callback.parent_run_id, book.spec, dict)
    resumed.set_state(saved[1])
    assert resumed_book.records["t1"].logged_epoch == 3
    _report(resumed_book, resumed, trial, 3, 0.3)  # the trial, restarted from epoch 2's checkpoint
    _report(resumed_book, resumed, trial, 4, 0.25)
    resumed.flush()
    history = sorted((m.step, m.value) for m in tracker.client.get_metric_history(rec.run_id, "val_loss"))
    assert history == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)), (4, 0.25)]


def _died_after_t2_and_t3_began(tracking_uri):
    """Tune saved the search with t1 running and t2 pending; then t2 ran to its end and t3
    (which Tune never saved) began, each with a run; then the driver died. Returns the tracker,
    the resumed book (from the saved state) and the runs of t2 and t3."""
    import pickle
    from types import SimpleNamespace

    from raysweep.book import TrialBook

    tracker, book, callback, t1 = _one_trial(tracking_uri, max_epochs=4)
    _report(book, callback, t1, 1, 0.9)
    saved = pickle.loads(pickle.dumps(book.get_state()))  # Tune's last save
    t2, t3 = (SimpleNamespace(trial_id=i, config={"lr": 0.02}, checkpoint=None) for i in ("t2", "t3"))
    for trial, epochs in ((t2, 4), (t3, 1)):
        book.on_trial_start(0, [], trial)
        callback.on_trial_start(0, [], trial)
        for epoch in range(1, epochs + 1):
            book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": 1.0 / epoch, "cost_usd": 0.25 * epoch})
            callback.on_trial_result(0, [], trial, {})
    book.on_trial_complete(0, [], t2)
    callback.on_trial_complete(0, [], t2)
    callback.drain()
    resumed = TrialBook(book.spec)
    resumed.set_state(saved)
    resumed.interrupt = SimpleNamespace(happened=False)
    return tracker, callback, resumed, book.records["t2"].run_id, book.records["t3"].run_id, t2


def test_a_run_begun_after_tunes_last_save_is_taken_up_by_its_trial_on_resume(tracking_uri):
    """kill -9 after Tune's last save: t2 (saved pending) ran and ended, t3 (never saved) began.
    Resumed, Tune runs t2 again: it continues its own run, so each trial has one run."""
    from raysweep.tracking import MLflowCallback

    tracker, callback, book, t2_run, t3_run, t2 = _died_after_t2_and_t3_began(tracking_uri)
    parent = callback.parent_run_id
    reopened = tracker.reopen_search(parent, book.records, "val_loss", unfinished={"t1", "t2"})
    assert set(reopened.waiting) == {"t2"} and reopened.orphaned == {"cost_usd": 1.0 + 0.25}
    assert tracker.client.get_run(t2_run).info.status == "RUNNING"  # its trial will run again
    t3 = tracker.client.get_run(t3_run)
    assert t3.info.status == "KILLED" and "raysweep.orphaned" in t3.data.tags  # Tune never saved it
    book.orphaned, book.waiting = reopened.orphaned, reopened.waiting
    resumed = MLflowCallback(tracker, book, parent, book.spec, dict)
    book.on_trial_start(0, [], t2)
    resumed.on_trial_start(0, [], t2)
    rec = book.records["t2"]
    assert rec.run_id == t2_run and rec.logged_epoch == 4 and book.orphaned == {"cost_usd": 0.25}
    for epoch in (3, 4):  # from its epoch-2 checkpoint: epochs MLflow holds are not logged twice
        _report(book, resumed, t2, epoch, 0.1 * epoch)
    book.on_trial_complete(0, [], t2)
    resumed.on_trial_complete(0, [], t2)
    resumed.drain()
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`raysweep.trial_id` = 't2'")
    assert [r.info.run_id for r in runs] == [t2_run] and runs[0].info.status == "FINISHED"
    assert [m.step for m in tracker.client.get_metric_history(t2_run, "val_loss")] == [1, 2, 3, 4]
    assert "raysweep.orphaned" not in runs[0].data.tags


def test_a_waiting_run_whose_trial_never_starts_again_ends_as_an_orphan_or_waits_past_a_ctrl_c(tracking_uri):
    from types import SimpleNamespace

    from raysweep.runsetup import end_running_killed
    from raysweep.tracking import MLflowCallback

    tracker, callback, book, t2_run, t3_run, t2 = _died_after_t2_and_t3_began(tracking_uri)
    reopened = tracker.reopen_search(callback.parent_run_id, book.records, "val_loss", unfinished={"t2"})
    book.orphaned, book.waiting = reopened.orphaned, dict(reopened.waiting)
    resumed = MLflowCallback(tracker, book, callback.parent_run_id, book.spec, dict)
    book.interrupt = SimpleNamespace(happened=True)  # Ctrl-C before t2 started again
    resumed.on_experiment_end([t2])
    end_running_killed(book, tracker, resumed, {"raysweep.interrupted": "true"})
    run = tracker.client.get_run(t2_run)
    assert run.info.status == "KILLED" and "raysweep.orphaned" not in run.data.tags and "t2" in book.waiting
    # resumed again: waiting again; this time the search ends (a budget spent) before t2 starts
    reopened = tracker.reopen_search(callback.parent_run_id, book.records, "val_loss", unfinished={"t2"})
    assert tracker.client.get_run(t2_run).info.status == "RUNNING" and set(reopened.waiting) == {"t2"}
    book.waiting, book.interrupt.happened = reopened.waiting, False
    resumed.on_experiment_end([t2])
    run = tracker.client.get_run(t2_run)
    assert run.info.status == "KILLED" and "started again" in run.data.tags["raysweep.orphaned"] and not book.waiting
    assert reopened.orphaned["cost_usd"] == 1.0 + 0.25  # its compute stays billed, as an orphan's


def test_a_long_buffer_is_split_into_batches_mlflow_accepts(tracking_uri):
    """MLflow takes at most 1000 metrics per log_batch: 120 epochs x 10 metrics is 1200."""
    tracker, book, callback, trial = _one_trial(tracking_uri, max_epochs=200)
    rec = book.records["t1"]
    for epoch in range(1, 121):
        book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": 1.0 / epoch,
                                            **{f"m{i}": float(i) for i in range(8)}})
        callback.on_trial_result(0, [], trial, {})
    book.on_trial_complete(0, [], trial)
    callback.on_trial_complete(0, [], trial)
    callback.drain()
    run = tracker.client.get_run(rec.run_id)
    assert run.data.tags.get("raysweep.stopped_early") == "true"
    assert [m.step for m in tracker.client.get_metric_history(rec.run_id, "m7")] == list(range(1, 121))


def test_a_write_mlflow_refuses_fails_only_its_trial(ray_session, tmp_path, tracking_uri):
    from raysweep.search import run_search
    from raysweep.spec import validate
    from tests.conftest import make_raw

    spec = validate(make_raw(**{
        "name": "refused", "task": "tests.user_tasks:one_bad_metric_name", "max_epochs": 3,
        "search.num_samples": 3, "search.max_concurrent": 1, "scheduler.type": "fifo",
        "fixed": {"hidden": 32, "claim": str(tmp_path / "claimed")},
    }))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    statuses = sorted(t["status"] for t in result.trials)
    assert statuses == ["failed", "finished", "finished"]
    (bad,) = [t for t in result.trials if t["status"] == "failed"]
    assert bad["error"].startswith("MLflow refused a write:") and "a//b" in bad["error"]
    client = MlflowClient(tracking_uri)
    run = client.get_run(bad["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["raysweep.failure"] == "tracking"
    assert "a//b" in run.data.tags["raysweep.error"]
    assert bad["epochs"] < 3  # stopped once refused, not trained to the end
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_failed"] == 1


@pytest.mark.parametrize("log_model", [True, False])
def test_a_tracked_run_warms_up_its_end_once_a_trial_reports(log_model, tmp_path, tracking_uri):
    from raysweep.runsetup import WarmUp, begin
    from raysweep.spec import load_spec
    from raysweep.tracking.tracker import Tracker

    spec = load_spec(ROOT / "search_spaces" / "digits_mlp.yaml", [f"tracking.log_model={str(log_model).lower()}"])
    run = begin(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri, verbose=False, console=None)
    assert not [c for c in run.callbacks(None, dict, None) if isinstance(c, WarmUp)]  # nothing tracked yet
    run.tracker = Tracker(run.uri, spec.experiment)
    warm_up, = [c for c in run.callbacks(None, dict, None, "matplotlib.figure") if isinstance(c, WarmUp)]
    assert (warm_up.model, warm_up.work, warm_up.thread) == (log_model, ("matplotlib.figure",), None)
    started = []
    warm_up._run = lambda: started.append(1)  # what it imports: the test below, in a fresh process
    for _ in range(3):
        warm_up.on_trial_result(0, [], None, {})
    run.warmed_up()
    assert started == [1] and warm_up.thread.name == "raysweep-warm-up"


def test_the_warm_up_imports_what_logging_a_model_the_plots_and_the_views_need():
    # As a search hands it its end's work (search.py): the plots' module, and views.warm_up.
    modules = ("matplotlib.figure", "torch._dynamo", "mlflow.pytorch", "git", "optuna.importance._ped_anova",
               "optuna.visualization.matplotlib", "plotly.graph_objects")
    code = (
        "import json, sys\n"
        "import matplotlib\n"
        "before = matplotlib.get_backend()\n"
        "from raysweep.runsetup import WarmUp\n"
        "from raysweep.views import warm_up\n"
        "WarmUp(True, ('matplotlib.figure', warm_up))._run()\n"
        f"print(json.dumps([[m in sys.modules for m in {modules!r}], matplotlib.get_backend() == before]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # Every module loaded, and pyplot's backend left as it was (the thread draws without pyplot).
    assert json.loads(out.stdout) == [[True] * len(modules), True]


@pytest.mark.parametrize("web_server", ["walled"], indirect=True)
def test_a_tracker_whose_mlflow_refuses_its_first_request_says_so_in_one_line(web_server):
    """`search` and `train` open their Tracker while Ray starts: MLflow's 401 (an auth proxy,
    no credentials) came out as a traceback quoting the response body."""
    from raysweep.errors import SpecError
    from raysweep.tracking import Tracker

    with pytest.raises(SpecError) as refused:
        Tracker(web_server.url, "walled-off")
    assert str(refused.value) == (
        f"MLflow at {web_server.url} refused raysweep's first request: API request to endpoint "
        "/api/2.0/mlflow/experiments/get-by-name failed with error code 401 != 200; give its credentials "
        "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)")


def test_a_running_searchs_report_counts_only_ended_trials_as_saved():
    """`raysweep report` during a search said "82% saved" counting the running trials' epochs
    to come as saved by early stopping."""
    from raysweep.report import _early_stopping_line

    trials = [{"status": "finished", "epochs": 10}, {"status": "stopped", "epochs": 1}, {"status": "running", "epochs": 3}]
    totals = {"epochs_run": 14, "epochs_budget": 30, "compute_saved_fraction": 1 - 14 / 30}
    assert _early_stopping_line({"totals": totals, "trials": trials}) == (
        "early stopping so far: 11 of 20 epochs run (2 ended trials x max_epochs; 1 running), 45% saved")
    trials[2] = {"status": "finished", "epochs": 10}
    totals = {"epochs_run": 21, "epochs_budget": 30, "compute_saved_fraction": 1 - 21 / 30}
    assert _early_stopping_line({"totals": totals, "trials": trials}) == (
        "early stopping: 21 of 30 epochs run (3 trials x max_epochs), 30% saved")


class _DeadWriter:
    """The writer of a driver killed before it got to what it was handed."""

    def submit(self, write):
        pass

    def drain(self):
        pass


def test_runs_the_dead_drivers_writer_never_created_are_created_on_resume_with_every_point(tracking_uri):
    """kill -9 while the writer had not yet created two trials' runs: Tune's save holds their
    records without a run id and their epochs in the buffer. Resumed, the ended trial gets its
    run, its epochs and its end at once; the running one's run is created as it starts again,
    and the epochs its checkpoint covers are written first, once each."""
    import pickle
    from types import SimpleNamespace

    from raysweep.book import STOPPED, TrialBook
    from raysweep.tracking import MLflowCallback, Tracker
    from raysweep.spec import validate
    from tests.conftest import make_raw

    spec = validate(make_raw(max_epochs=6))
    tracker = Tracker(tracking_uri, spec.experiment)
    parent = tracker.start_search(spec)
    book = TrialBook(spec)
    callback = MLflowCallback(tracker, book, parent, spec, dict)
    callback._writer = _DeadWriter()
    t1, t2, t3 = (SimpleNamespace(trial_id=i, config={"lr": 0.01}, checkpoint=None) for i in ("t1", "t2", "t3"))
    for trial, epochs in ((t1, 3), (t2, 2), (t3, 1)):
        book.on_trial_start(0, [], trial)
        callback.on_trial_start(0, [], trial)
        for epoch in range(1, epochs + 1):
            _report(book, callback, trial, epoch, 1.0 / epoch)
    book.records["t1"].status = STOPPED  # ASHA stopped it at epoch 3
    callback.on_trial_complete(0, [], t1)
    saved = pickle.loads(pickle.dumps({0: book.get_state(), 1: callback.get_state()}))  # Tune's save; then kill -9
    assert saved[0]["records"]["t1"].run_id is None and tracker.client.search_runs([tracker.experiment_id],
                                                                                  "tags.`raysweep.kind` = 'trial'") == []

    resumed_book = TrialBook(spec)
    resumed_book.set_state(saved[0])
    tracker.reopen_search(parent, resumed_book.records, "val_loss", unfinished={"t2"})
    resumed = MLflowCallback(tracker, resumed_book, parent, spec, dict)
    resumed.set_state(saved[1])
    run1 = resumed_book.records["t1"].run_id
    assert run1 is not None and tracker.client.get_run(run1).info.status == "FINISHED"
    assert tracker.client.get_run(run1).data.tags["raysweep.stopped_early"] == "true"
    assert [m.step for m in tracker.client.get_metric_history(run1, "val_loss")] == [1, 2, 3]

    resumed_book.on_trial_start(0, [], t2)  # from its epoch-1 checkpoint: epoch 2 again, then 3
    resumed.on_trial_start(0, [], t2)
    for epoch in (2, 3):
        _report(resumed_book, resumed, t2, epoch, 0.1 * epoch)
    resumed_book.on_trial_complete(0, [], t2)
    resumed.on_trial_complete(0, [], t2)
    resumed.drain()
    run2 = resumed_book.records["t2"].run_id
    history = sorted((m.step, m.value) for m in tracker.client.get_metric_history(run2, "val_loss"))
    assert history == [(1, 1.0), (2, 0.5), (3, pytest.approx(0.3))]
    # t3 never starts again (the resumed search's budget ran out first): the book settles it at
    # the end, and its run is created then, with its epoch.
    resumed_book.interrupt = SimpleNamespace(happened=False)
    resumed_book.on_experiment_end([t2])
    resumed.on_experiment_end([t2])
    run3 = resumed_book.records["t3"].run_id
    assert run3 is not None and tracker.client.get_run(run3).info.status == "FINISHED"
    assert [m.step for m in tracker.client.get_metric_history(run3, "val_loss")] == [1]
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`raysweep.kind` = 'trial'")
    assert sorted(r.info.run_id for r in runs) == sorted([run1, run2, run3])
