"""benchmarks/search_efficiency.py runs end to end at a tiny size, on the session's Ray, in two
parts that add up to one result."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import ray

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_search_efficiency_gives_every_method_the_same_epochs_and_adds_up_parts(ray_session, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    search_efficiency = importlib.import_module("search_efficiency")
    out = tmp_path / "eff.json"
    size = ["--tasks", "digits_mlp", "--budget-trials", "3", "--epochs", "2", "--out", str(out)]
    assert search_efficiency.main([*size, "--seeds", "0"]) == 0
    assert ray.is_initialized()  # the session's Ray: not the benchmark's to shut down
    assert search_efficiency.main([*size, "--seeds", "1"]) == 0  # a second part, added to the first
    data = json.loads(out.read_text())
    assert {(r["seed"], r["method"]) for r in data["rows"]} == {
        (s, m) for s in (0, 1) for m in ("raysweep", "random", "optuna", "tune")}
    assert len(data["commands"]) == 2 and data["commands"][0].startswith("python benchmarks/search_efficiency.py")
    for row in data["rows"]:
        # The same budget for all: 6 epochs. Plain Tune's stopper may let the other running
        # trial's epoch in after the last one; raysweep, random and Optuna never cross it.
        assert row["epochs"] == 6 or (row["method"] == "tune" and 6 <= row["epochs"] <= 7)
        assert row["device_s"] > 0 and row["test_metric"] == "test_loss"
        assert row["test_value"] == row["test"]["test_loss"] > 0
        epochs, device_s, test = row["curve"][-1]  # the anytime curve ends at the whole spend, on the choice
        assert (epochs, device_s, test) == (row["epochs"], pytest.approx(row["device_s"], abs=0.01), row["test_value"])
        assert [p[0] for p in row["curve"]] == sorted(p[0] for p in row["curve"])
    rows = {(r["seed"], r["method"]): r for r in data["rows"]}
    assert rows[0, "random"]["trials"] == 3  # no early stopping: the budget's full trials
    summary = data["tasks"]["digits_mlp"]
    assert summary["ranked_seeds"] == [0, 1]
    ranks = [m["rank_mean"] for m in summary["methods"].values()]
    assert sum(ranks) == pytest.approx(1 + 2 + 3 + 4)  # mean ranks of 4 methods over the same seeds
    # random's median curve reaches random's final median by random's whole spend, if not before
    assert 0 < summary["methods"]["random"]["reach_device_s"] <= 1.0
    assert (tmp_path / "eff.png").stat().st_size > 0
    # --replot runs nothing: the same rows and commands, the summary and plot drawn again
    (tmp_path / "eff.png").unlink()
    assert search_efficiency.main(["--replot", "--budget-trials", "3", "--epochs", "2", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["rows"] == data["rows"] and again["commands"] == data["commands"]
    assert (tmp_path / "eff.png").stat().st_size > 0


def test_the_file_backed_image_task_is_searched_by_every_method_through_ray_data(ray_session, tmp_path, monkeypatch):
    """The image_folder task reads PNGs the benchmark writes; the methods that run the task
    themselves (standalone Optuna, plain Tune) and the test evaluation read them through the
    same Ray Data splits raysweep's search does."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    search_efficiency = importlib.import_module("search_efficiency")
    monkeypatch.setattr(search_efficiency, "IMAGES", {"per_class": 10, "size": 8})  # 70 / 15 / 15 images
    monkeypatch.setattr(search_efficiency, "_images", {})  # this test's folder and splits, dropped after it
    monkeypatch.setattr(search_efficiency, "_data", {})
    out = tmp_path / "eff.json"
    size = ["--tasks", "image_folder", "--seeds", "0", "--budget-trials", "2", "--epochs", "2", "--out", str(out)]
    assert search_efficiency.main(size) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["method"] for r in rows) == ["optuna", "random", "raysweep", "tune"]
    for row in rows:
        assert row["epochs"] == 4 or (row["method"] == "tune" and 4 <= row["epochs"] <= 5)
        assert row["test_value"] == row["test"]["test_loss"] > 0 and 0 <= row["test"]["test_accuracy"] <= 1


def test_search_efficiency_refuses_to_mix_parts_of_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    search_efficiency = importlib.import_module("search_efficiency")
    out = tmp_path / "eff.json"
    out.write_text(json.dumps({"settings": {"budget_trials": 24, "epochs": 20, "concurrency": 2, "set": []},
                               "rows": []}))
    with pytest.raises(SystemExit) as exit_info:
        search_efficiency.main(["--epochs", "3", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "other settings" in capsys.readouterr().err
