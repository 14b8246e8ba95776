"""benchmarks/trial_overhead.py runs end to end at a tiny size, on the test session's Ray."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("trial_overhead")


def test_trial_overhead_benchmark_measures_raysweep_and_optuna(ray_session, tmp_path, monkeypatch):
    trial_overhead = _module(monkeypatch)
    out = tmp_path / "trial_overhead.json"
    argv = ["--trials", "2", "--paths", "raysweep,optuna", "--no-warmup", "--out", str(out)]
    assert trial_overhead.main(argv) == 0
    data = json.loads(out.read_text())
    assert set(data["marginal_per_trial_s"]) == {"raysweep", "optuna"}
    assert all(r["train_s"] > 0 and r["wall_s"] > r["train_s"] for r in data["rows"])
    assert data["command"].startswith("python benchmarks/trial_overhead.py --trials 2")


def test_train_in_tune_path_runs_a_torch_trainer_per_trial(ray_session, tmp_path, monkeypatch):
    row = _module(monkeypatch).train_in_tune_path(1, tmp_path)
    assert row["reports_received"] == 1 and row["train_s"] > 0
