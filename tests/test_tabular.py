"""The built-in `tabular` task: scikit-learn's shipped tables and a user's CSV or Parquet, without Ray."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from raysweep.tasks import resolve_task
from raysweep.tasks.data import stratified_splits
from raysweep.tasks.tabular import Tabular, load_table, source_of
from sklearn.datasets import load_breast_cancer, load_wine

from raysweep.context import LocalContext

CONFIG = {"lr": 1e-2, "batch_size": 32, "hidden": 32}


@pytest.mark.parametrize(
    "dataset, features, classes, rows", [("wine", 13, 3, 178), ("breast_cancer", 30, 2, 569), ("iris", 4, 3, 150)]
)
def test_builtin_datasets_split_60_20_20_with_every_class(dataset, features, classes, rows):
    splits = Tabular().splits_for({"dataset": dataset}, 0)
    parts = (splits.train, splits.val, splits.test)
    assert sum(len(x) for x, _ in parts) == rows
    assert len(splits.val[0]) == pytest.approx(0.2 * rows, abs=2)
    for x, y in parts:
        assert x.shape[1] == features and x.dtype == torch.float32 and y.dtype == torch.int64
        assert set(y.tolist()) == set(range(classes))
    model = Tabular().build_model({"dataset": dataset})
    assert model(splits.test[0]).shape == (len(splits.test[0]), classes)


def test_standardized_with_train_statistics_only():
    x, y = load_wine(return_X_y=True)
    raw = stratified_splits(x, y, seed=3)  # the same split, unscaled
    mean, std = raw.train[0].double().mean(0), raw.train[0].double().std(0, correction=0)
    splits = Tabular().splits_for({"dataset": "wine"}, 3)
    assert torch.allclose(splits.train[0].double().mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(splits.train[0].double().std(0, correction=0), torch.ones(13, dtype=torch.float64), atol=1e-5)
    for scaled, unscaled in ((splits.val, raw.val), (splits.test, raw.test)):
        assert torch.allclose(scaled[0].double(), (unscaled[0].double() - mean) / std, atol=1e-5)
        assert torch.equal(scaled[1], unscaled[1])
    assert Tabular().splits_for({"dataset": "wine"}, 3) is splits  # cached per process


def test_wine_trains_past_80_percent_deterministically():
    def run():
        ctx = LocalContext(max_epochs=5, seed=0, metric="val_accuracy")
        Tabular().train({**CONFIG, "dataset": "wine"}, ctx)
        return ctx

    first, second = run(), run()  # ~0.1 s each: 106 training rows
    assert [r["epoch"] for r in first.reports] == [1, 2, 3, 4, 5]
    assert first.reports[-1]["val_accuracy"] > 0.8
    assert [r["val_loss"] for r in first.reports] == [r["val_loss"] for r in second.reports]


def write_breast_cancer(path):
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})  # string labels
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return frame


def test_csv_with_string_labels_trains_evaluates_and_reloads(tmp_path, monkeypatch):
    write_breast_cancer(tmp_path / "cancer.csv")
    monkeypatch.chdir(tmp_path)  # a relative `data` is relative to the working directory
    task = resolve_task("tabular")
    config = {**CONFIG, "data": "cancer.csv", "target": "target"}
    table = load_table(source_of(config))
    assert table.classes == ("benign", "malignant") and table.x.shape == (569, 30)

    ctx = LocalContext(max_epochs=3, seed=0, metric="val_accuracy")
    task.train(config, ctx)
    assert ctx.reports[-1]["val_accuracy"] > 0.8  # chance: 0.63 (always "benign")
    test = task.evaluate(config, ctx.checkpoints[-1], seed=0)
    assert set(test) == {"test_loss", "test_accuracy"} and test["test_accuracy"] > 0.8


def test_an_edited_file_is_read_again(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [0.0, 1.0] * 10, "label": [0, 1] * 10}).to_csv(path, index=False)
    config = {"data": str(path), "target": "label"}
    assert load_table(source_of(config)).x.shape == (20, 1)
    pd.DataFrame({"a": [0.0, 1.0] * 10, "b": 1.0, "label": [0, 1] * 10}).to_csv(path, index=False)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))  # as if saved later, whatever the clock's granularity
    assert load_table(source_of(config)).x.shape == (20, 2)


def test_parquet_reads_like_csv(tmp_path):
    pytest.importorskip("pyarrow")
    write_breast_cancer(tmp_path / "cancer.parquet")
    write_breast_cancer(tmp_path / "cancer.csv")
    tables = [load_table(source_of({"data": str(tmp_path / f"cancer.{ext}"), "target": "target"}))
              for ext in ("parquet", "csv")]
    assert tables[0].classes == tables[1].classes
    assert np.array_equal(tables[0].y, tables[1].y) and np.allclose(tables[0].x, tables[1].x)


@pytest.mark.parametrize("config, message", [
    ({"dataset": "winee"}, r"^tabular: unknown dataset 'winee' \(choose wine, breast_cancer, iris; or data: a file\)$"),
    ({"data": "nope.csv", "target": "y"}, r"^tabular: data file not found: .*nope\.csv$"),
    ({"data": "t.csv"}, r"^tabular: data \('t.csv'\) needs target: the name of its target column$"),
    ({"data": "t.txt", "target": "y"}, r"^tabular: data \('t.txt'\) must be a \.csv or \.parquet file$"),
    ({"dataset": "wine", "data": "t.csv", "target": "y"}, r"^tabular: both dataset \('wine'\) and data"),
    ({"target": "y"}, r"^tabular: target \('y'\) needs data"),
])
def test_config_errors_name_the_key(config, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        Tabular().splits_for(config, 0)


def test_a_semicolon_separated_file_is_named_as_such(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a;label\n1;0\n2;1\n")
    with pytest.raises(ValueError, match=r"^tabular: target column 'label' not in t\.csv \(columns: a;label\); the "
                                         r"header is one column: the file looks ';'-separated"):
        Tabular().splits_for({"data": str(path), "target": "label"}, 0)


@pytest.mark.parametrize("frame, message", [
    ({"a": [1.0, 2.0], "y": [0, 1]}, r"^tabular: target column 'label' not in t\.csv \(columns: a, y\)$"),
    ({"a": [1.0, 2.0], "colour": ["red", "blue"], "label": [0, 1]},
     r"^tabular: feature column 'colour' of t\.csv is not numeric \(.*\); encode it as numbers or drop it$"),
    ({"a": [1.0, None, None], "label": [0, 1, 0]},
     r"^tabular: column 'a' of t\.csv has 2 missing values; fill or drop them first$"),
    ({"a": [1.0, 2.0], "label": [0.5, 1.5]}, r"^tabular: target column 'label' of t\.csv holds fractional numbers"),
    ({"a": [1.0, 2.0], "label": ["x", "x"]}, r"^tabular: target column 'label' of t\.csv has 1 distinct value"),
    ({"a": [1.0, 2.0, 3.0, 4.0], "label": [0, 0, 0, 1]}, r"^tabular: .*t\.csv .* cannot be split 60/20/20 by class: "),
])
def test_file_errors_name_the_column(frame, message, tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        Tabular().splits_for({"data": str(path), "target": "label"}, 0)


def test_a_csv_model_is_logged_to_mlflow_with_an_example_from_its_own_file(tmp_path, tracking_uri):
    import mlflow
    import mlflow.pytorch
    from raysweep.tracking.models import log_pytorch_model, using_tracking_uri

    write_breast_cancer(tmp_path / "cancer.csv")
    config = {**CONFIG, "data": str(tmp_path / "cancer.csv"), "target": "target"}
    ctx = LocalContext(max_epochs=1, seed=0)
    Tabular().train(config, ctx)
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("tabular")).info.run_id
    uri = log_pytorch_model(tracking_uri, run_id, Tabular(), config, ctx.checkpoints[-1], seed=0)
    x = Tabular().splits_for(config, 0).test[0]
    with torch.no_grad(), using_tracking_uri(tracking_uri):
        logged = mlflow.pytorch.load_model(uri)(x)
        assert torch.allclose(logged, Tabular().load_model(config, ctx.checkpoints[-1])(x))
        # The input example (and the signature inferred from it) comes from this file, not the default wine.
        assert mlflow.models.get_model_info(uri).signature.inputs.inputs[0].shape == (-1, 30)
    assert logged.shape == (len(x), 2)
