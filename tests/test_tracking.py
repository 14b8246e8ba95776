"""Where MLflow data goes, and how the UI link is built."""

from __future__ import annotations

from pathlib import Path

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
