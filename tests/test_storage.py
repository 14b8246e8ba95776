"""Shared storage: a search on `s3://...` (a local S3 server) keeps its results and checkpoints
there, restarts from them, and the driver reads the best one back from there."""

from __future__ import annotations

import glob

import torch
from mlflow import MlflowClient

from raysweep.ray_internals import unfinished_checkpoints
from raysweep.resume import refill_checkpoints
from raysweep.search import run_search
from raysweep.spec import validate
from raysweep.storage import join
from tests.conftest import S3_BUCKET, make_raw


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_two_worker_trial_on_s3_restarts_from_its_s3_checkpoint(ray_session, s3_server, tmp_path, tracking_uri):
    storage, client = s3_server
    spec = validate(make_raw(**{
        "name": "s3-fault", "task": "tests.user_tasks:KillOnce", "max_epochs": 4, "search.num_samples": 1,
        "scheduler.type": "fifo", "resources.workers_per_trial": 2, "failures.max_failures": 1,
        "space": {"lr": {"type": "uniform", "low": 0.005, "high": 0.02}},
        "fixed": {"out_dir": str(tmp_path), "kill_epoch": 2, "hidden": 32, "batch_size": 64},
    }))
    result = run_search(spec, storage=storage("searches"), tracking_uri=tracking_uri)
    (trial,) = result.trials
    assert trial["status"] == "finished" and trial["epochs"] == 4
    # The restarted worker group found the epoch-2 checkpoint on S3 (nothing local holds it).
    starts = [torch.load(f, weights_only=True)["resumed_epoch"] for f in glob.glob(str(tmp_path / "start-*.pt"))]
    assert sorted(starts, key=lambda e: e or 0) == [None, None, 2, 2]
    keys = _keys(client, "searches/s3-fault/")
    checkpoints = {k.split("/")[-2] for k in keys if "/checkpoint_" in k}
    assert len(checkpoints) >= 2, keys  # spec default keeps the last 2
    assert any(k.endswith("experiment_state-" + k.split("experiment_state-")[-1]) for k in keys if "experiment_state-" in k)
    # The driver pulled the best checkpoint back from S3: its model scored the test split.
    assert 0.7 < result.test_metrics["test_accuracy"] <= 1.0
    client_ml = MlflowClient(tracking_uri)
    assert [m.step for m in client_ml.get_metric_history(trial["run_id"], "val_loss")] == [1, 2, 3, 4]


def test_a_search_on_s3_resumes_from_its_state_there(ray_session, s3_server, tmp_path, tracking_uri):
    """`--resume` reads the search's saved state (trial book, Tune experiment) back from S3."""
    storage, client = s3_server
    spec = validate(make_raw(**{"name": "s3-grow", "max_epochs": 2, "search.num_samples": 3}))
    first = run_search(spec, storage=storage("grow"), tracking_uri=tracking_uri)
    # What --resume of a dead driver checks first reads Tune's saved state there too (none unfinished).
    assert refill_checkpoints(join(storage("grow"), "s3-grow")) == [] and unfinished_checkpoints(
        join(storage("grow"), "s3-grow")) == {}
    grown = run_search(spec, storage=storage("grow"), tracking_uri=tracking_uri, resume=True, more_samples=2)
    assert grown.parent_run_id == first.parent_run_id and len(grown.trials) == 5
    assert [t["trial_id"] for t in grown.trials[:3]] == [t["trial_id"] for t in first.trials]
    assert any(k.startswith("grow/s3-grow+1/trial_") for k in _keys(client, "grow/s3-grow+1/"))
    children = MlflowClient(tracking_uri).search_runs(
        [first.experiment_id], f"tags.`mlflow.parentRunId` = '{first.parent_run_id}'")
    assert len(children) == 5


def test_a_file_written_whole_is_there_whole_or_as_it_was_when_the_writer_dies(tmp_path):
    """write_whole (the concluded search's book and marker, a state file --resume puts back): a
    writer that dies mid-write leaves the earlier file, never one cut short."""
    import pyarrow.fs

    from raysweep.storage import write_whole

    local = pyarrow.fs.LocalFileSystem()
    path = f"{tmp_path}/book.pkl"
    write_whole(local, path, b"first book")
    write_whole(local, path, b"second book")
    assert (tmp_path / "book.pkl").read_bytes() == b"second book"

    class DiesMidWrite:  # the filesystem of a process killed after half the bytes
        def open_output_stream(self, where):
            stream = local.open_output_stream(where)

            class Half:
                def __enter__(self):
                    return self

                def write(self, data):
                    stream.write(data[: len(data) // 2])
                    stream.close()
                    raise KeyboardInterrupt

                def __exit__(self, *exc):
                    return False
            return Half()

        def move(self, src, dest):
            local.move(src, dest)

    try:
        write_whole(DiesMidWrite(), path, b"third book, never whole")
    except KeyboardInterrupt:
        pass
    assert (tmp_path / "book.pkl").read_bytes() == b"second book"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".raysweep-tmp-book.pkl", "book.pkl"]
