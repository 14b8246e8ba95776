"""Where MLflow data goes, and how the UI link is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.tracking import resolve_tracking_uri, runs_url, trial_run_name


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
    history = tracker.client.get_metric_history(book.records["t1"].run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]


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

    report = build_report(MlflowClient(tracking_uri), "running-search")
    assert report["status"] == "RUNNING"
    assert report["counts"] == {"running": 1, "finished": 0, "stopped": 1, "failed": 0}
    assert report["best"]["trial_id"] == "a" and report["best"]["value"] == 0.5
    assert report["totals"]["cost_usd"] == pytest.approx(0.03)  # each trial's latest, summed
    assert report["totals"]["epochs_run"] == 3
