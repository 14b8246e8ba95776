"""The cost meter and ledger: FLOPs against an analytic count, allocation-based device time,
restarts billed, shared GPUs' energy, a CPU trial's estimated energy and emissions."""

from __future__ import annotations

import time

import pytest
import torch
from mlflow import MlflowClient

from raysweep.book import TrialRecord
from raysweep.carbon import cpu_tdp, kg_per_kwh
from raysweep.cost import SEGMENT_KEY, Meter
from raysweep.search import run_search
from raysweep.spec import validate
from raysweep.tasks.digits import DigitsMLP, digits_splits
from tests.conftest import make_raw
from raysweep.context import LocalContext

HIDDEN = 32


def analytic_training_flops_per_sample(hidden: int) -> int:
    """Linear layers 64 -> h -> h -> 10. Forward: 2 x in x out per layer; backward: the weight
    gradient (same again) for every layer, the input gradient for all but the first."""
    layers = [(64, hidden), (hidden, hidden), (hidden, 10)]
    forward = sum(2 * i * o for i, o in layers)
    weight_grads = forward
    input_grads = sum(2 * i * o for i, o in layers[1:])
    return forward + weight_grads + input_grads


def test_measured_flops_match_the_analytic_count_within_5_percent():
    ctx = LocalContext(max_epochs=2, seed=0)
    DigitsMLP().train({"lr": 0.01, "batch_size": 64, "hidden": HIDDEN}, ctx)
    n_train = len(digits_splits(0).train[0])
    last = ctx.reports[-1]
    assert last["samples"] == 2 * n_train  # cumulative over epochs
    expected = analytic_training_flops_per_sample(HIDDEN) * last["samples"]
    assert last["flops"] == pytest.approx(expected, rel=0.05)
    assert ctx.reports[0]["flops"] == pytest.approx(last["flops"] / 2)


def test_device_hours_and_dollars_come_from_the_allocation():
    meter = Meter(workers=2, cpus_per_worker=3, gpus_per_worker=0, cpu_hour_usd=0.5, gpu_hour_usd=9.0)
    time.sleep(0.2)
    m = meter.metrics()
    assert m["cost_wall_s"] >= 0.2
    assert m["cost_device_hours"] == pytest.approx(2 * 3 * m["cost_wall_s"] / 3600, rel=0.01)
    assert m["cost_usd"] == pytest.approx(m["cost_device_hours"] * 0.5, rel=0.01)
    assert m["cost_gpu_hours"] == 0 and "energy_j" not in m  # no device attached, no epoch: no energy figure


@pytest.mark.parametrize("country", [None, "FRA"])
def test_a_cpu_trial_reports_codecarbons_energy_and_its_emissions(country):
    ctx = LocalContext(max_epochs=3, seed=0, meter={"cpus_per_worker": 1, "country": country})
    DigitsMLP().train({"lr": 0.01, "batch_size": 64, "hidden": HIDDEN}, ctx)
    energy = [r["energy_j"] for r in ctx.reports]
    assert 0 < energy[0] < energy[1] < energy[2]  # cumulative, every epoch
    for report in ctx.reports:
        assert report["co2e_kg"] == pytest.approx(report["energy_j"] / 3.6e6 * kg_per_kwh(country))
    # Bounded by codecarbon's model: its TDP share for the busy core plus its RAM power over the trial.
    _, tdp = cpu_tdp()
    watts = energy[-1] / ctx.reports[-1]["cost_wall_s"]
    assert 0 < watts <= tdp + 20


def test_a_meter_that_only_counts_estimates_no_energy():
    meter = Meter(cpu_energy=False)
    meter.attach(torch.device("cpu"))
    meter.add_epoch(100, 1.0, meter.local_energy_j())
    assert "energy_j" not in meter.metrics() and "co2e_kg" not in meter.metrics()


def test_the_ledger_adds_a_restarted_trials_segments():
    rec = TrialRecord("t", 1, {})
    first = {SEGMENT_KEY: 1, "cost_wall_s": 10.0, "samples": 100.0, "epoch": 1}
    rec.bill(first)
    assert first == {"cost_wall_s": 10.0, "samples": 100.0, "epoch": 1}  # the segment key is the ledger's
    rec.bill({SEGMENT_KEY: 1, "cost_wall_s": 20.0, "samples": 200.0})  # cumulative within a segment
    restarted = {SEGMENT_KEY: 2, "cost_wall_s": 4.0, "samples": 100.0, "epoch": 2}  # from epoch 1's checkpoint
    rec.bill(restarted)
    assert restarted["cost_wall_s"] == 24.0 and restarted["samples"] == 300.0  # epoch 2 billed twice
    plain = {"val_loss": 1.0}  # a plain Ray Train loop's report: no meter, nothing to bill
    rec.bill(plain)
    assert plain == {"val_loss": 1.0}
    # --resume: MLflow got a report the saved book had not (the driver died in between).
    rec.rebase_bill({"cost_wall_s": 30.0, "samples": 400.0})
    resumed = {SEGMENT_KEY: 3, "cost_wall_s": 1.0, "samples": 100.0}
    rec.bill(resumed)
    assert resumed["cost_wall_s"] == 31.0 and resumed["samples"] == 500.0


class _Counter:
    """A GPU's total-energy counter (no GPU here): 100 J between reads."""

    def delta_j(self) -> float:
        return 100.0


@pytest.mark.parametrize("gpus,billed", [(1, 100.0), (0.5, 50.0), (0.25, 25.0)])
def test_trials_sharing_a_gpu_each_count_their_share_of_its_energy(gpus, billed):
    meter = Meter(gpus_per_worker=gpus)
    meter.device, meter._energy = torch.device("cuda"), _Counter()  # no GPU here: its counter stood in
    assert meter.local_energy_j() == billed


def test_a_restart_bills_the_epochs_it_repeats(ray_session, tmp_path, tracking_uri):
    # A Ray Train trial's restart, and its worker group's start-up, are billed in
    # tests/test_distributed.py's killed-worker test (one 2-worker trial serves both).
    spec = validate(make_raw(**{
        "name": "bill", "task": "tests.user_tasks:KillOnce", "max_epochs": 4, "search.num_samples": 1,
        "scheduler.type": "fifo", "failures.max_failures": 1, "checkpoint.every": 2,
        "space": {"lr": {"type": "choice", "values": [0.01]}},
        "fixed": {"out_dir": str(tmp_path), "kill_epoch": 3, "kill_rank": 0, "hidden": 16, "batch_size": 64},
    }))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    (trial,) = result.trials
    assert (tmp_path / "killed").exists() and trial["status"] == "finished"
    client = MlflowClient(tracking_uri)
    history = {m: {p.step: p.value for p in client.get_metric_history(trial["run_id"], m)}
               for m in ("samples", "flops", "cost_wall_s", "epoch_time_s")}
    per_epoch = history["samples"][1]
    # Epochs 1, 2, 3, the kill, epoch 3 again from the epoch-2 checkpoint, then 4: five billed.
    assert history["samples"][4] == trial["metrics"]["samples"] == 5 * per_epoch
    assert history["flops"][4] == pytest.approx(5 * history["flops"][1])
    assert history["cost_wall_s"][4] > history["cost_wall_s"][3]
    assert result.totals["samples"] == 5 * per_epoch


def test_every_report_carries_the_cost_metrics():
    ctx = LocalContext(max_epochs=1, seed=0, meter={"cpu_hour_usd": 0.05})
    DigitsMLP().train({"lr": 0.01, "batch_size": 64, "hidden": HIDDEN}, ctx)
    (report,) = ctx.reports
    for key in ("cost_wall_s", "cost_device_hours", "cost_usd", "samples", "samples_per_s", "flops", "peak_host_mem_mb"):
        assert report[key] > 0, key
