"""The cost meter: FLOPs against an analytic count, allocation-based device time, restarts."""

from __future__ import annotations

import time

import pytest

from raysweep.cost import Meter
from raysweep.tasks.digits import DigitsMLP, digits_splits
from tests.test_loop import RecordingContext

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
    ctx = RecordingContext(max_epochs=2, seed=0)
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
    assert m["cost_gpu_hours"] == 0 and "energy_j" not in m  # no GPU, no energy figure


def test_a_restored_meter_continues_its_totals():
    first = Meter()
    first.flops_per_sample = 10.0
    first.add_epoch(100, 1.0)
    state = first.state()
    resumed = Meter()
    resumed.flops_per_sample = 10.0
    resumed.restore(state)
    resumed.add_epoch(100, 1.0)
    m = resumed.metrics()
    assert m["samples"] == 200 and m["flops"] == 2000
    assert m["cost_wall_s"] >= state["wall_s"]


def test_every_report_carries_the_cost_metrics():
    ctx = RecordingContext(max_epochs=1, seed=0, meter={"cpu_hour_usd": 0.05})
    DigitsMLP().train({"lr": 0.01, "batch_size": 64, "hidden": HIDDEN}, ctx)
    (report,) = ctx.reports
    for key in ("cost_wall_s", "cost_device_hours", "cost_usd", "samples", "samples_per_s", "flops", "peak_host_mem_mb"):
        assert report[key] > 0, key
