"""The spec's data: section through real Ray Data: files (Parquet, CSV, JSON lines, image
folders) read, preprocessed with the train split's statistics and streamed to trials, from
a local folder and from S3 (moto on 127.0.0.1), on one worker and on worker groups."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from rich.console import Console

from raysweep.files import check_data
from raysweep.search import run_search
from raysweep.spec import DataSection, validate
from tests.conftest import make_raw

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """benchmarks/make_image_dataset.py at a small size: 10 classes, 16x16, 8/2/2 per class."""
    spec = importlib.util.spec_from_file_location("make_image_dataset", ROOT / "benchmarks" / "make_image_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("images")
    module.make_dataset(out, 12, size=16, seed=0, verbose=False)
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """breast_cancer with a text label, split 341 / 114 / 114 rows, in each format: train as
    two shards in a folder, val and test as one file each."""
    from sklearn.datasets import load_breast_cancer

    out = tmp_path_factory.mktemp("table")
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["label"] = np.where(bunch.target == 1, "benign", "malignant")
    frame = frame.drop(columns=["target"]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, val, test = frame[:341], frame[341:455], frame[455:]
    writers = {"parquet": lambda f, p: f.to_parquet(p), "csv": lambda f, p: f.to_csv(p, index=False),
               "jsonl": lambda f, p: f.to_json(p, orient="records", lines=True)}
    for fmt, write in writers.items():
        (out / fmt / "train").mkdir(parents=True)
        write(train[:200], out / fmt / "train" / f"part-0.{fmt}")
        write(train[200:], out / fmt / "train" / f"part-1.{fmt}")
        write(val, out / fmt / f"val.{fmt}")
        write(test, out / fmt / f"test.{fmt}")
    return out, train, val, test


def _section(table_dir, fmt="parquet", **changes):
    return DataSection(**{"train": str(table_dir / fmt / "train"), "val": str(table_dir / fmt / f"val.{fmt}"),
                          "test": str(table_dir / fmt / f"test.{fmt}"), "format": fmt, **changes})


def test_the_preflight_counts_parquet_rows_and_image_classes_without_ray(table, images):
    table_dir, train, *_ = table
    info = check_data(_section(table_dir))
    assert info["splits"]["train"]["rows"] == 341 and info["splits"]["train"]["files"] == 2
    assert len(info["features"]) == 30 and "label" not in info["features"]
    info = check_data(DataSection(train=str(images / "train"), val=str(images / "val"), format="images"))
    assert info["classes"] == [str(c) for c in range(10)] and info["input_shape"] == [3, 16, 16]
    assert info["splits"]["train"]["rows"] == 80 and info["splits"]["val"]["rows"] == 20


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_reader_gives_standardised_features_and_class_indices(ray_session, table, fmt):
    """The same table as Parquet, CSV or JSON lines: its columns come back as one feature
    vector, scaled by the train split's statistics only, labels as class indices."""
    from raysweep.ingest import load

    table_dir, train, val, test = table
    data = load(_section(table_dir, fmt), say=lambda line: None)
    assert data.info["classes"] == ["benign", "malignant"] and data.info["input_shape"] == [30]
    assert data.info["cached"] and {s: v["rows"] for s, v in data.info["splits"].items()} == \
        {"train": 341, "val": 114, "test": 114}
    x = torch.cat([xb for xb, _ in data.batches("train")]).double()
    assert torch.allclose(x.mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(0, correction=0), torch.ones(30, dtype=torch.float64), atol=1e-4)
    features = [c for c in train.columns if c != "label"]
    mean, std = train[features].mean().to_numpy(), train[features].std(ddof=0).to_numpy()
    for split, frame in (("val", val), ("test", test)):
        xs, ys = zip(*data.batches(split))
        got = torch.cat(xs).numpy()
        # The same rows in some order: compare sorted by the first (standardised) feature.
        expected = ((frame[features].to_numpy() - mean) / std).astype(np.float32)
        order_got, order_expected = np.argsort(got[:, 0]), np.argsort(expected[:, 0])
        np.testing.assert_allclose(got[order_got], expected[order_expected], rtol=1e-4, atol=1e-4)
        labels = (frame["label"].to_numpy() == "malignant").astype(np.int64)
        assert torch.cat(ys).numpy()[order_got].tolist() == labels[order_expected].tolist()


def test_a_read_waits_for_a_free_cpu_instead_of_warning_that_it_will_hang(ray_session, images):
    """Ray's view of free CPUs lags the end of the tasks that held them, and Ray Data warned
    that the cluster "does not have any available CPUs. The Dataset job will hang" in about 1
    of 10 image searches, for reads that then ran at once. Here every CPU is held for a moment
    as the read starts: the read waits for one, without that warning."""
    import logging
    import time

    import ray
    from ray.util.debug import reset_log_once

    from raysweep.ingest import load

    @ray.remote(num_cpus=ray.cluster_resources()["CPU"])
    def hold(seconds: float) -> None:
        time.sleep(seconds)

    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("ray.data.dataset")
    section = DataSection(train=str(images / "train"), val=str(images / "val"), format="images")
    info = check_data(section)  # listed before: the CPUs are held as the read itself starts
    load(section, info, say=lambda line: None)  # Ray Data's imports (seconds) done before they are held
    held = hold.remote(1.0)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU") and time.monotonic() < deadline:  # until it holds them
        time.sleep(0.01)
    assert not ray.available_resources().get("CPU")
    reset_log_once("cpu_warning")  # Ray Data warns once a process: let it warn here if it would
    logger.addHandler(handler)
    try:
        data = load(section, info, say=lambda line: None)
    finally:
        logger.removeHandler(handler)
    ray.get(held)
    assert data.info["splits"]["train"]["rows"] == 80
    assert not [w for w in warnings if "available CPUs" in w]


def test_data_that_streamed_in_this_process_still_travels_to_a_trial():
    import pickle

    from raysweep.ingest import TrialData

    data = TrialData({"format": "csv"}, None, _ahead=(row for row in range(3)))  # a prefetch under way
    copy = pickle.loads(pickle.dumps(data))
    assert copy.info == {"format": "csv"} and copy._ahead is None and data._ahead is not None


def test_a_label_val_has_and_train_has_not_is_named(ray_session, table, tmp_path):
    from raysweep.ingest import load
    from raysweep.errors import SpecError

    table_dir, _, val, _ = table
    odd = val.copy()
    odd.loc[odd.index[0], "label"] = "unknown"
    odd.to_parquet(tmp_path / "val.parquet")
    with pytest.raises(SpecError, match="data.val: label 'unknown' in column 'label' is not among data.train's classes"):
        load(_section(table_dir, val=str(tmp_path / "val.parquet")), say=lambda line: None)


@pytest.mark.parametrize("split,column,cache", [("train", "mean_radius", "auto"), ("val", "mean_radius", "auto"),
                                                ("train", "mean_radius", "none"), ("val", "label", "auto"),
                                                ("train", "label", "auto")])
def test_a_missing_value_is_named_before_any_trial(ray_session, table, tmp_path, split, column, cache):
    """A NaN feature in train made every feature value NaN once standardised: each trial failed
    on a NaN loss, blaming the training. A missing label failed in a TypeError out of sorting the
    classes. Each is one line naming the split and column; a streamed train split's is found by
    its statistics, before any trial."""
    from raysweep.errors import SpecError
    from raysweep.ingest import load

    table_dir, train, val, _ = table
    frame = (train if split == "train" else val).copy()
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[7], column] = None  # an empty cell
    frame.to_csv(tmp_path / f"{split}.csv", index=False)
    what = "(data.label) has a missing value" if column == "label" else "has a missing value (an empty cell, NaN or inf)"
    with pytest.raises(SpecError, match=rf"^data\.{split}: column '{column}' {re.escape(what)}"):
        load(_section(table_dir, "csv", cache=cache, **{split: str(tmp_path / f"{split}.csv")}), say=lambda line: None)


def test_image_folder_search_from_a_local_folder(ray_session, images, tmp_path, tracking_uri):
    """The built-in image task, searched as any other: 1-worker trials, ASHA, MLflow, a model."""
    spec = validate(make_raw(**{
        "name": "images-local", "task": "image_folder", "max_epochs": 3, "search.num_samples": 4,
        "search.max_concurrent": 1, "scheduler.grace_period": 1, "scheduler.reduction_factor": 2,
        "data": {"train": str(images / "train"), "val": str(images / "val"), "test": str(images / "test"),
                 "format": "images"},
        # One at a time, and learning rates far apart: whether ASHA stops a trial does not depend
        # on which of two close trials reports first (with 2 at once and lr 1e-3..1e-2 it did).
        "space": {"lr": {"type": "choice", "values": [1e-2, 1e-5]}},
        "fixed": {"batch_size": 16, "channels": 4, "stages": 2, "augment": True},
    }))
    console = Console(file=io.StringIO(), width=300)
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri, console=console)
    lines = console.file.getvalue().splitlines()
    assert any(line.startswith("data: images, train 80, val 20, test 20 rows, inputs 3x16x16, 10 classes; read once")
               for line in lines), lines
    assert len(result.trials) == 4 and {t["status"] for t in result.trials} <= {"finished", "stopped"}
    assert "stopped" in {t["status"] for t in result.trials}  # ASHA acted
    client = MlflowClient(tracking_uri)
    for trial in result.trials:
        steps = [m.step for m in client.get_metric_history(trial["run_id"], "val_loss")]
        assert steps == list(range(1, trial["epochs"] + 1))
    assert set(result.test_metrics) == {"test_loss", "test_accuracy"}
    info = json.loads(Path(client.download_artifacts(result.parent_run_id, "data_info.json", str(tmp_path))).read_text())
    assert info["input_shape"] == [3, 16, 16] and len(info["mean"]) == 3
    # The registered model takes what the data section makes (preprocessed 3x16x16 inputs).
    import mlflow.pytorch

    from raysweep.tracking.models import using_tracking_uri

    with using_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(result.model_uri)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_two_worker_image_search_streams_from_s3(ray_session, s3_server, images, tmp_path, tracking_uri):
    """From S3, not cached (every trial streams the files), 2-worker trials under ASHA."""
    storage_of, client = s3_server
    for path in images.rglob("*.png"):
        client.upload_file(str(path), "raysweep-results", f"images/{path.relative_to(images)}")
    uri = storage_of("images")
    base, query = uri.split("?")
    spec = validate(make_raw(**{
        "name": "images-s3", "task": "image_folder", "max_epochs": 2, "search.num_samples": 2,
        "scheduler.grace_period": 1, "resources.workers_per_trial": 2,
        "data": {"train": f"{base}/train?{query}", "val": f"{base}/val?{query}", "test": f"{base}/test?{query}",
                 "format": "images", "cache": "none"},
        "space": {"lr": {"type": "choice", "values": [0.003, 0.01]}},
        "fixed": {"batch_size": 16, "channels": 4, "stages": 2},
    }))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    assert [t["status"] for t in result.trials].count("failed") == 0 and len(result.trials) == 2
    assert result.best["epochs"] == 2 and set(result.test_metrics) == {"test_loss", "test_accuracy"}
    runs = MlflowClient(tracking_uri).search_runs([result.experiment_id])
    assert {r.data.tags.get("raysweep.kind") for r in runs} == {"search", "trial"}


def test_streamed_shards_run_equal_steps_and_count_val_rows_once(ray_session, table, tmp_path, tracking_uri):
    """3 workers on 341 Parquet rows at batch 16: Ray Train's equal split gives each 113 rows
    (2 dropped), so 8 steps each; val's 114 rows are evaluated once over the ranks."""
    table_dir, *_ = table
    spec = validate(make_raw(**{
        "name": "stream-probe", "task": "tests.data_tasks:stream_probe", "max_epochs": 2,
        "search.num_samples": 1, "scheduler.type": "fifo", "resources.workers_per_trial": 3,
        "data": {"train": str(table_dir / "parquet" / "train"), "val": str(table_dir / "parquet" / "val.parquet"),
                 "format": "parquet"},
        "space": {"lr": {"type": "choice", "values": [0.1]}},
        "fixed": {"batch_size": 16, "out_dir": str(tmp_path)},
    }))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    (trial,) = result.trials
    assert trial["status"] == "finished" and trial["metrics"]["val_count"] == 114
    for epoch in (1, 2):
        seen = [torch.load(tmp_path / f"stream-rank{r}-epoch{epoch}.pt", weights_only=True) for r in range(3)]
        assert [s["rows"] for s in seen] == [341 // 3] * 3
        assert {s["steps"] for s in seen} == {math.ceil((341 // 3) / 16)}
        assert sum(s["val_rows"] for s in seen) == 114
        for s in seen[1:]:
            assert all(torch.equal(p, s["params"][k]) for k, p in seen[0]["params"].items())


@pytest.mark.parametrize("fmt,data", [("parquet", "table"), ("images", "images")])
def test_a_streamed_split_is_read_and_preprocessed_by_one_operator(ray_session, table, images, fmt, data):
    """Read and preprocessing as two Ray Data operators stalled a two-worker trial streaming 7 GB
    of Parquet for good: with one CPU left to Ray Data, the read held its reservation and the
    preprocessing got none (docs/performance.md, Data ingest). One operator cannot starve the other."""
    from raysweep.ingest import load

    section = _section(table[0], cache="none") if data == "table" else DataSection(
        train=str(images / "train"), val=str(images / "val"), format="images", cache="none")
    train = load(section, say=lambda line: None).datasets["train"]
    assert sum(len(b["y"]) for b in train.iter_batches(batch_size=64)) == (341 if fmt == "parquet" else 80)
    operators = [line for line in train.stats().splitlines() if line.startswith("Operator")]
    assert len(operators) == 2, operators  # the file list (no CPU), then one map: read + preprocess
    assert "FromArrow" in operators[0] and "_Normalize" in operators[1], operators


def test_data_tasks_keep_their_worker_processes_between_epochs(ray_session):
    """Ray ends an idle worker process after 1 s once its node has fewer free CPUs than idle
    processes, as when a trial's workers hold them: each epoch of a streamed split then waited
    for fresh processes for its Ray Data tasks (4.5-6 s of an 11 s two-worker epoch). The Ray
    raysweep starts keeps them a minute (ray_internals.NODE_ENV), as the test session's does."""
    import os
    import time

    import ray

    from raysweep.ingest import DATA_TASKS

    @ray.remote
    class Holder:  # a trial's workers, holding all the CPUs but half of one
        def ready(self):
            return True

    @ray.remote(num_cpus=0.5, **DATA_TASKS)
    def pid():
        return os.getpid()

    holders = [Holder.options(num_cpus=(ray.available_resources()["CPU"] - 0.5) / 4).remote() for _ in range(4)]
    try:
        ray.get([h.ready.remote() for h in holders])
        first = ray.get(pid.remote())
        time.sleep(3)  # Ray's default threshold (1 s) and its sweep interval (1 s) passed
        assert ray.get(pid.remote()) == first
    finally:
        for h in holders:
            ray.kill(h)


class _Split:
    """A stand-in for a worker's split (no Ray): `iter_batches` is an iterable, as Ray's is, that
    starts a pass when iterated; `passes` records when each pass was started, counted in rows
    the training loop had taken by then."""

    def __init__(self, rows: int, block: int):
        self.rows, self.block, self.passes, self.taken = rows, block, [], 0

    def _blocks(self):
        for i in range(0, self.rows, self.block):
            y = np.arange(i, min(i + self.block, self.rows))
            yield {"x": y.astype(np.float32)[:, None], "y": y}

    def iter_batches(self, batch_size=None, batch_format="numpy"):
        split = self

        class Pass:
            def __iter__(self):
                split.passes.append(split.taken)
                return split._blocks()

        return Pass()


def _epochs(split: _Split, shuffle_buffer: int, epochs: int, seed: int = 0, batch_size: int = 16) -> list[list[int]]:
    from raysweep.ingest import TrialData

    data = TrialData({"splits": {"train": {}}}, None, shuffle_buffer=shuffle_buffer)
    seen = []
    for epoch in range(1, epochs + 1):
        rows = []
        for batch in data.iter_batches("train", batch_size, device="cpu", rank=0, world_size=1, seed=seed,
                                       epoch=epoch, iterator=lambda s: split, last_epoch=epoch == epochs):
            assert torch.equal(batch["x"][:, 0].long(), batch["y"]) and batch["x"].dtype == torch.float32
            rows += batch["y"].tolist()
            split.taken += len(batch["y"])
        seen.append(rows)
    return seen


@pytest.mark.parametrize("shuffle_buffer", [0, 64])
def test_the_next_epochs_stream_starts_while_the_last_pooled_rows_train(shuffle_buffer):
    """A streamed epoch used to begin by waiting for its first `shuffle_buffer` rows to be read
    and preprocessed (1.5 s of a 6.5 s two-worker epoch): the next epoch's pass now starts once
    this one's stream has run dry, before its last pooled rows have trained; not after the last."""
    split = _Split(rows=203, block=25)
    seen = _epochs(split, shuffle_buffer, epochs=3)
    assert all(sorted(rows) == list(range(203)) for rows in seen)  # every row once an epoch
    assert len(split.passes) == 3  # no pass after the last epoch
    # epoch e + 1's pass started after epoch e's first row trained, before its last
    assert split.passes[0] == 0 and 0 < split.passes[1] < 203 and 203 < split.passes[2] < 406
    if shuffle_buffer:
        assert seen[0] != seen[1] and seen[0] != list(range(203))  # reshuffled every epoch
        assert _epochs(_Split(rows=203, block=25), shuffle_buffer, epochs=2) == seen[:2]  # the same after a restart
    else:
        assert seen == [list(range(203))] * 3  # file order
