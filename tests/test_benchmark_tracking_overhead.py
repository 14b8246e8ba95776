"""benchmarks/tracking_overhead.py runs end to end at a tiny size, on the test session's Ray."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_tracking_overhead_benchmark_runs_the_same_search_on_and_off(ray_session, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    tracking_overhead = importlib.import_module("tracking_overhead")
    out = tmp_path / "tracking_overhead.json"
    argv = ["--trials", "2", "--epochs", "2", "--repeats", "1", "--no-warmup", "--out", str(out)]
    assert tracking_overhead.main(argv) == 0
    data = json.loads(out.read_text())
    assert [(r["tracking"], r["views"]) for r in data["runs"]] == [(False, False), (True, True), (True, False)]
    assert all(r["epochs_run"] == 4 for r in data["runs"])  # FIFO: identical work every way
    assert all(data["median_wall_s"][m] > 0 for m in ("off", "on", "no_views"))
    assert data["overhead_without_views"] == data["median_wall_s"]["no_views"] / data["median_wall_s"]["off"] - 1


def test_tracking_overhead_benchmark_logs_to_a_server_behind_a_round_trip(ray_session, tmp_path, monkeypatch):
    """--server-rtt-ms: a local mlflow server behind the latency proxy, stopped after."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    tracking_overhead = importlib.import_module("tracking_overhead")
    out = tmp_path / "tracking_overhead_server.json"
    argv = ["--trials", "2", "--epochs", "2", "--repeats", "1", "--no-warmup", "--server-rtt-ms", "5", "--out", str(out)]
    assert tracking_overhead.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["store"] == "mlflow server, 5 ms round trip" and data["server_rtt_ms"] == 5
    assert all(r["epochs_run"] == 4 for r in data["runs"]) and len(data["runs"]) == 3
