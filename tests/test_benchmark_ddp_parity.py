"""benchmarks/ddp_parity.py runs end to end at a tiny size on the session's Ray, for one worker
(loop parity) and two (DDP parity): bare script, raysweep (with one worker also with async
reports) and the same loop as a plain Ray trial."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import ray

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("workers", [1, 2])
def test_parity_benchmark_writes_all_three_throughputs(ray_session, tmp_path, monkeypatch, workers):
    # Imported by name from its folder, not from a file spec: the bare path's spawned
    # processes unpickle its worker function by module name.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    ddp_parity = importlib.import_module("ddp_parity")
    out = tmp_path / "ddp_parity.json"

    rounds = 1  # each path once: a round costs 15-40 s here
    args = ["--workers", str(workers), "--epochs", "2", "--rounds", str(rounds), "--channels", "8",
            "--poll-interval", "0.04", "--out", str(out)]
    assert ddp_parity.main(args) == 0

    data = json.loads(out.read_text())
    bare, ours, reference = data["rows"]
    assert data["workers"] == workers and data["goal_ratio"] == {1: 0.95, 2: 0.9}[workers]
    assert ours["path"] == {1: "raysweep (in-process)", 2: "raysweep (Ray Train)"}[workers]
    assert reference["path"] == {1: "plain Tune trial", 2: "plain Ray Train in Tune"}[workers]
    for row in (bare, ours, ours["loop_only"], reference):  # rounds of two epochs, the first of each untimed
        assert [len(run) for run in row["epoch_times_s"]] == [2] * rounds and row["epochs_timed"] == rounds
        assert row["samples_per_s"] > 0
    assert data["vs_plain_ray_ratio"] > 0
    assert data["rounds"] == rounds and len(data["round_ratios"]) == rounds
    assert all(r > 0 for r in data["round_ratios"])
    assert data["ratio"] > 0 and data["train_samples_per_epoch"] > 0
    assert data["config"]["channels"] == 8 and data["config"]["poll_interval_s"] == 0.04
    assert all(data["epoch_ms"][path] > 0 for path in ("bare", "raysweep", "loop"))
    added = data["added_ms_per_epoch"]  # the whole epoch's extra time = loop's + report's
    assert added["total"] == pytest.approx(added["loop"] + added["report_and_checkpoint"])
    assert data["command"].endswith(" ".join(args))
    if workers == 1:  # and the one-worker trial with `scheduler.report: async`
        timed = data["async"]
        assert [len(run) for run in timed["epoch_times_s"]] == [2] * rounds and timed["samples_per_s"] > 0
        assert timed["ratio"] > 0 and len(timed["round_ratios"]) == rounds
    else:
        assert "async" not in data
    assert ray.is_initialized()  # the session's Ray: the script must not shut it down
