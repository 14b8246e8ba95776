"""benchmarks/data_ingest.py runs end to end at a tiny size on the session's Ray: every data
source trains through raysweep, and the streaming memory part measures each worker."""

from __future__ import annotations

import importlib
import json

import ray


def test_ingest_benchmark_writes_every_sources_throughput_and_worker_memory(ray_session, tmp_path):
    # As a module of the repository (on the trial processes' path too): its trials import
    # their task by name, `benchmarks.data_ingest:feed`.
    data_ingest = importlib.import_module("benchmarks.data_ingest")
    out = tmp_path / "data_ingest.json"
    args = ["--per-class", "12", "--epochs", "2", "--rounds", "1", "--workers", "1", "--rss-gb", "0.01",
            "--rss-per-class", "6", "--rss-workers", "2", "--out", str(out)]
    assert data_ingest.main(args) == 0

    data = json.loads(out.read_text())
    (row,) = data["throughput"]
    assert row["workers"] == 1 and set(row["samples_per_s"]) == set(data_ingest.SOURCES)
    assert all(v > 0 for v in row["samples_per_s"].values()) and row["ray_data_vs_dataloader"] > 0
    # Every source trained on the same 80 images in its one timed epoch.
    assert {runs[0]["timed_samples"] for runs in row["runs"].values()} == {80}
    assert [r["workers"] for r in data["rss"]] == [2]
    for r in data["rss"]:
        assert len(r["peak_rss_mb"]) == r["workers"] and min(r["peak_rss_mb"]) > 100 and r["dataset_mb"] > 0
    assert data["throughput_command"].endswith(" ".join(args)) and data["goals"]["throughput_ratio"] == 0.9
    assert ray.is_initialized()  # the session's Ray: the script must not shut it down
