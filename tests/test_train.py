"""`raysweep train`: one run at a fixed configuration, its model back out of MLflow."""

from __future__ import annotations

import json
import math

import mlflow.pytorch
import pytest
import torch
from mlflow import MlflowClient

from raysweep.tracking.models import using_tracking_uri
from raysweep.cli import main
from raysweep.errors import SpecError
from raysweep.spec import validate
from raysweep.tasks.digits import digits_splits
from raysweep.train import train_params
from tests.conftest import make_raw


def test_unset_hyperparameters_take_the_middle_of_their_range():
    spec = validate(make_raw())  # lr loguniform 1e-4..1e-1, batch_size choice [64, 128], dropout 0..0.3
    params = train_params(spec, {"batch_size": 128})
    assert math.isclose(params["lr"], math.sqrt(1e-4 * 1e-1))
    assert params["batch_size"] == 128 and math.isclose(params["dropout"], 0.15) and params["hidden"] == 32
    with pytest.raises(SpecError, match="--set lrr: not a hyperparameter"):
        train_params(spec, {"lrr": 0.1})


def test_unknown_hyperparameter_exits_2_before_ray(capsys):
    assert main(["train", "search_spaces/digits_mlp.yaml", "--set", "learning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learning_rate" in err


def test_two_worker_train_logs_a_model_that_reloads_with_the_same_accuracy(ray_session, tmp_path, tracking_uri, capsys):
    summary = tmp_path / "summary.json"
    code = main([
        "train", "search_spaces/digits_cnn.yaml", "--workers", "2", "--set", "max_epochs=3", "--set", "lr=0.005",
        # Polling slower than a digits epoch (~0.1 s): each epoch waits for the poll, and the driver says so.
        "--set", "resources.poll_interval_s=0.5",
        "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "results"), "--summary-json", str(summary),
    ])
    assert code == 0
    assert "less than Ray Train's poll interval (0.5 s, resources.poll_interval_s)" in capsys.readouterr().out
    result = json.loads(summary.read_text())
    assert result["epochs"] == 3 and result["params"]["lr"] == 0.005
    client = MlflowClient(tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["raysweep.kind"] == "train"
    assert "mlflow.parentRunId" not in run.data.tags
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    assert history[-1].value > 0.7

    with using_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(result["model_uri"])
    x, y = digits_splits(0).val
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).double().mean().item()
    assert accuracy == pytest.approx(history[-1].value, abs=1e-9)
    assert result["test_metrics"]["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])


def test_logging_a_model_leaves_the_process_tracking_uri_as_it_was(tmp_path, monkeypatch):
    """MLflow 3's set_tracking_uri writes MLFLOW_TRACKING_URI into the environment: a search
    must not leave it there for the process's (and its children's) later MLflow use."""
    import os

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with using_tracking_uri(f"sqlite:///{tmp_path / 'a.db'}"):
        assert mlflow.get_tracking_uri().endswith("a.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    with using_tracking_uri(f"sqlite:///{tmp_path / 'b.db'}"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://team:5000"


def test_ranked_by_val_loss_best_the_logged_model_is_the_best_epochs(ray_session, tmp_path, tracking_uri):
    summary = tmp_path / "summary.json"
    code = main([
        "train", "search_spaces/digits_mlp.yaml", "--set", "metric=val_loss_best", "--set", "max_epochs=8",
        "--set", "lr=0.01", "--set", "batch_size=64", "--set", "dropout=0", "--set", "weight_decay=0",
        "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "results"), "--summary-json", str(summary),
    ])
    assert code == 0
    result = json.loads(summary.read_text())
    losses = [m.value for m in MlflowClient(tracking_uri).get_metric_history(result["run_id"], "val_loss")]
    assert len(losses) == 8 and losses.index(min(losses)) < 7  # at this rate the last epoch is not the best

    with using_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(result["model_uri"])
    x, y = digits_splits(0).val
    with torch.no_grad():
        val_loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert val_loss == pytest.approx(min(losses), rel=1e-5)
