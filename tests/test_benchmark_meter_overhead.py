"""benchmarks/meter_overhead.py runs end to end at a tiny size (no Ray)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_meter_overhead_benchmark_times_both_meters(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    meter_overhead = importlib.import_module("meter_overhead")
    out = tmp_path / "meter_overhead.json"
    assert meter_overhead.main(["--epochs", "2", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["median_s_per_epoch"]["null"] > 0 and data["median_s_per_epoch"]["real"] > 0
    assert len(data["times_s"]["real"]) == 1
