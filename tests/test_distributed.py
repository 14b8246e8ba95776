"""Data-parallel trials on Ray Train: the same task code, a 2-worker TorchTrainer per trial."""

from __future__ import annotations

from mlflow import MlflowClient

from raysweep.search import run_search
from raysweep.spec import validate
from tests.conftest import make_raw


def test_two_worker_trials_train_report_and_checkpoint(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{
        "name": "ddp", "max_epochs": 3, "search.num_samples": 2, "search.max_concurrent": 1,
        "scheduler.type": "fifo", "resources.workers_per_trial": 2, "space.lr": {"type": "uniform", "low": 0.005, "high": 0.02},
    }))
    result = run_search(spec, storage=str(tmp_path), tracking_uri=tracking_uri)
    assert [t["status"] for t in result.trials] == ["finished", "finished"]
    assert result.best["metrics"]["val_accuracy"] > 0.7  # learning, not just running
    client = MlflowClient(tracking_uri)
    for trial in result.trials:
        history = client.get_metric_history(trial["run_id"], "val_loss")
        assert [m.step for m in history] == [1, 2, 3]  # one point per epoch, not one per worker
    # The best trial's Ray Train checkpoint reached the driver: its model scored the test split.
    assert 0.7 < result.test_metrics["test_accuracy"] <= 1.0
    assert "best_checkpoint" in {a.path for a in client.list_artifacts(result.parent_run_id)}
