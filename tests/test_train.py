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


def _searched(tracking_uri: str, experiment: str, best: dict | None) -> str:
    """A search's parent run as a search leaves it (raysweep.kind=search; its best trial's
    hyperparameters written by the Tracker's own log_best_params); its run id."""
    from raysweep.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment)
    run_id = tracker.client.create_run(tracker.experiment_id, tags={"raysweep.kind": "search"},
                                       run_name=experiment).info.run_id
    if best is not None:
        tracker.log_best_params(run_id, best, set())
    return run_id


def _train_args(*argv: str):
    from raysweep.cli import build_parser

    return build_parser().parse_args(["train", "search_spaces/digits_mlp.yaml", *argv])


def test_from_search_starts_from_the_searchs_best_configuration_with_set_on_top(tracking_uri, capsys):
    from raysweep.cli import _train_spec

    best = {"hidden": 128, "lr": 0.0123, "batch_size": 32, "weight_decay": 1e-5, "dropout": 0.4}
    parent = _searched(tracking_uri, "digits-mlp", best)
    args = _train_args("--from-search", "--set", "dropout=0.1", "--set", "hidden=64", "--tracking-uri", tracking_uri)
    _, params = _train_spec(args)
    # The sampled ones from the search, --set above them; fixed ones stay the spec's (--set's here).
    assert params == {"hidden": 64, "lr": 0.0123, "batch_size": 32, "weight_decay": 1e-5, "dropout": 0.1}
    assert args.from_search_run == parent
    # By parent run id too; a parameter the space gained since takes its middle, and is named.
    del best["weight_decay"]
    other = _searched(tracking_uri, "digits-mlp", best)
    args = _train_args("--from-search", parent, "--tracking-uri", tracking_uri)
    assert _train_spec(args)[1]["weight_decay"] == 1e-5 and args.from_search_run == parent
    args = _train_args("--from-search", "--tracking-uri", tracking_uri)  # the latest search: `other`
    params = _train_spec(args)[1]
    assert args.from_search_run == other and params["weight_decay"] == pytest.approx(math.sqrt(1e-6 * 1e-2))
    assert capsys.readouterr().err == ("raysweep: note: weight_decay is not in the search's best configuration: "
                                       "it takes the middle of its range (or give it with --set)\n")


def test_from_search_names_what_the_search_trained_on_that_this_run_does_not(tracking_uri, tmp_path, capsys):
    """A search on a user's CSV (the shipped table spec, its dataset dropped and data given with
    --set), then `train --from-search` with the shipped spec alone: it trains on wine with the
    CSV's hyperparameters. It still may (the spec says what a run trains on), but says so."""
    from raysweep.cli import _train_spec
    from raysweep.spec import load_spec
    from raysweep.tracking import Tracker

    for split in ("train", "val"):
        (tmp_path / f"{split}.csv").write_text("x1,x2,kind\n" + "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(12)))
    wine = "search_spaces/tabular_wine.yaml"
    on_csv = ["fixed.dataset=null", "data.format=csv", "data.label=kind",
              f"data.train={tmp_path / 'train.csv'}", f"data.val={tmp_path / 'val.csv'}"]
    searched = load_spec(wine, on_csv)
    tracker = Tracker(tracking_uri, searched.experiment)
    parent = tracker.start_search(searched)  # its params and spec.yaml, as a search logs them
    tracker.log_best_params(parent, {"dataset": None, "layers": 2, "lr": 0.01, "batch_size": 16,
                                     "weight_decay": 1e-5, "dropout": 0.1, "hidden": 32}, set())

    def train(*argv):
        args = build_parser().parse_args(["train", wine, "--from-search", parent, "--tracking-uri", tracking_uri, *argv])
        params = _train_spec(args)[1]
        return params, capsys.readouterr().err

    from raysweep.cli import build_parser

    params, err = train()
    assert params["lr"] == 0.01 and params["dataset"] == "wine"
    assert err == (
        f"raysweep: note: search {parent} ran with dataset=null; this run takes the spec's dataset=wine "
        "(--set dataset=... to change it)\n"
        f"raysweep: note: search {parent} trained on data: format csv, train {tmp_path / 'train.csv'}, "
        f"val {tmp_path / 'val.csv'}, label kind; this run on the task's own data\n")
    # The same data (and dataset) as the search: nothing to say; a changed label is said.
    assert train(*(x for kv in on_csv for x in ("--set", kv)))[1] == ""
    err = train(*(x for kv in [*on_csv, "data.label=x2"] for x in ("--set", kv)))[1]
    assert err.endswith("label kind; this run on data: format csv, train "
                        f"{tmp_path / 'train.csv'}, val {tmp_path / 'val.csv'}, label x2\n") and err.count("\n") == 1
    # Another task; a fixed value given with --set is the user's choice, not a note.
    err = train("--set", "task=regression", "--set", "dataset=diabetes")[1]
    assert f"raysweep: note: search {parent} ran task 'tabular'; this run trains 'regression'\n" in err
    assert "dataset=null" not in err


def test_from_search_of_no_search_or_of_one_without_a_best_is_one_line(tracking_uri, capsys):
    parent = _searched(tracking_uri, "digits-mlp", None)  # running, or every trial failed
    for search, expected in [
        ("", f"--from-search: search 'digits-mlp' (run {parent}) has no best configuration yet: none of its "
             "trials reported a value, or it is still running"),
        ("nope", "--from-search: no experiment named 'nope' in this tracking store"),
    ]:
        assert main(["train", "search_spaces/digits_mlp.yaml", "--from-search", search, "--tracking-uri", tracking_uri]) == 2
        assert capsys.readouterr().err == f"raysweep: error: {expected}\n"


def test_ranked_by_val_loss_best_the_logged_model_is_the_best_epochs(ray_session, tmp_path, tracking_uri):
    # The configuration comes from a search in the store (--from-search), as a user trains a winner.
    parent = _searched(tracking_uri, "digits-mlp", {"hidden": 128, "lr": 0.01, "batch_size": 64, "dropout": 0,
                                                    "weight_decay": 0})
    summary = tmp_path / "summary.json"
    code = main([
        "train", "search_spaces/digits_mlp.yaml", "--set", "metric=val_loss_best", "--set", "max_epochs=8",
        "--from-search", "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "results"),
        "--summary-json", str(summary),
    ])
    assert code == 0
    result = json.loads(summary.read_text())
    assert result["params"] == {"hidden": 128, "lr": 0.01, "batch_size": 64, "dropout": 0, "weight_decay": 0}
    assert MlflowClient(tracking_uri).get_run(result["run_id"]).data.tags["raysweep.from_search"] == parent
    losses = [m.value for m in MlflowClient(tracking_uri).get_metric_history(result["run_id"], "val_loss")]
    assert len(losses) == 8 and losses.index(min(losses)) < 7  # at this rate the last epoch is not the best

    with using_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(result["model_uri"])
    x, y = digits_splits(0).val
    with torch.no_grad():
        val_loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert val_loss == pytest.approx(min(losses), rel=1e-5)
