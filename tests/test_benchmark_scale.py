"""benchmarks/scale.py runs end to end at a tiny size, on the test session's Ray."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_scale_benchmark_runs_real_trials_and_samples_driver_memory(ray_session, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    scale = importlib.import_module("scale")
    out = tmp_path / "scale.json"
    assert scale.main(["--trials", "5", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["trials_finished"] == 5
    assert 0 < data["driver_rss_start_mib"] <= data["driver_rss_peak_mib"] <= data["driver_maxrss_mib"] + 1
