"""benchmarks/startup.py runs end to end at a tiny size: four fresh processes, phases in order."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_startup_benchmark_times_the_phases_of_optuna_tune_and_raysweep(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    startup = importlib.import_module("startup")
    out = tmp_path / "startup.json"
    assert startup.main(["--trials", "2", "--epochs", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for method in ("optuna", "tune", "raysweep"):
        phases = data["runs"][method][0]
        timed = [phases[p] for p in startup.PHASES if phases[p] is not None]
        assert timed == sorted(timed) and timed[0] > 0, (method, phases)  # each phase after the one before
        assert (phases["ray_started"] is None) == (method == "optuna")
    trial = data["trial"]["runs"][0]
    timed = [trial[p] for p in startup.TRIAL_PHASES]
    assert timed == sorted(timed) and timed[0] > 0, trial  # the 2-worker trial's phases, in order too
    assert data["raysweep_over_optuna"] > 1 and data["command"].startswith("python benchmarks/startup.py --trials 2")
