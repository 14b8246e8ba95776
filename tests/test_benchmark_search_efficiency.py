"""benchmarks/search_efficiency.py runs end to end at a tiny size, on the session's Ray."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import ray

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_search_efficiency_benchmark_compares_all_methods(ray_session, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    search_efficiency = importlib.import_module("search_efficiency")
    out = tmp_path / "eff.json"
    argv = ["--tasks", "digits_mlp", "--seeds", "0", "--samples", "3", "--epochs", "2", "--out", str(out)]
    assert search_efficiency.main(argv) == 0
    assert ray.is_initialized()  # the session's Ray: not the benchmark's to shut down
    data = json.loads(out.read_text())
    rows = {row["method"]: row for row in data["rows"]}
    assert set(rows) == {"raysweep", "random", "optuna"}
    for row in rows.values():
        assert row["trials"] == 3 and 0 < row["epochs"] <= 6
        assert row["best_val"] > 0 and 0 <= row["test"]["test_accuracy"] <= 1
        assert row["curve"][-1][0] == row["epochs"]  # one point per epoch spent
        assert row["curve"][-1][1] <= row["best_val"]  # best seen at any epoch <= the chosen last value
    assert rows["random"]["epochs"] == 6  # no early stopping
    checks = {c["method"]: c for c in data["goal_checks"]}
    assert set(checks) == {"raysweep", "optuna"}
    assert (tmp_path / "eff.png").stat().st_size > 0
    assert data["command"].startswith("python benchmarks/search_efficiency.py")
