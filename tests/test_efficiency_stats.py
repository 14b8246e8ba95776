"""The equal-compute benchmark's figures (benchmarks/efficiency_stats.py), on hand-made runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import efficiency_stats as stats  # noqa: E402  (benchmarks/ is not a package; its test_metric is no test)
from efficiency_stats import anytime, bootstrap_ci, median_curve, ranks, reach, value_at  # noqa: E402


def test_the_test_counterpart_of_a_validation_metric():
    assert stats.test_metric("val_loss") == "test_loss"
    assert stats.test_metric("val_r2") == "test_r2"
    assert stats.test_metric("val_loss_best") == "test_loss"


def _trial(id, end_t, value, eligible=True):
    return {"id": id, "end_t": end_t, "value": value, "eligible": eligible}


def test_anytime_follows_the_incumbent_at_the_compute_spent_when_it_changed():
    # Three trials of 2 epochs (1 device-second each) ending at t=2, 4, 6; b is best, c never leads.
    trials = [_trial("a", 2, 0.5), _trial("b", 4, 0.3), _trial("c", 6, 0.4)]
    events = [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0), (6, 1.0)]
    tests = {"a": 0.55, "b": 0.35, "c": 0.45}
    curve = anytime(trials, events, "min", lambda t: tests[t["id"]], trials[1])
    assert curve == [[2, 2.0, 0.55], [4, 4.0, 0.35], [6, 6.0, 0.35]]


def test_anytime_skips_trials_the_method_could_not_choose_and_ends_on_its_choice():
    trials = [_trial("a", 1, 0.9), _trial("pruned", 2, 0.1, eligible=False), _trial("b", 3, 0.5)]
    events = [(1, 2.0), (2, 2.0), (3, 2.0)]
    curve = anytime(trials, events, "max", lambda t: {"a": 0.8, "b": 0.7}[t["id"]], trials[0])
    assert curve == [[1, 2.0, 0.8], [3, 6.0, 0.8]]  # mode max: a stays the incumbent


def test_value_at_reads_a_step_curve_and_is_worst_before_its_first_point():
    curve = [[2, 2.0, 0.5], [4, 4.0, 0.3]]
    assert value_at(curve, 1.0, 1, "min") == math.inf
    assert value_at(curve, 3.0, 1, "min") == 0.5
    assert value_at(curve, 4.0, 0, "min") == 0.3


def test_median_curve_scales_each_seed_by_its_own_random_spend_and_reach_finds_the_share():
    # Seed 1 spends twice what seed 0 does; both reach 0.3 at half of their scale.
    curves = [[[1, 5.0, 0.5], [2, 10.0, 0.3]], [[1, 10.0, 0.5], [2, 20.0, 0.3]]]
    grid = [0.0, 0.25, 0.5, 1.0]
    med = median_curve(curves, [20.0, 40.0], grid, 1, "min")
    assert med == [math.inf, 0.5, 0.3, 0.3]
    assert reach(grid, med, 0.3, "min") == 0.5
    assert reach(grid, med, 0.2, "min") is None


def test_ranks_share_ties():
    assert ranks({"a": 0.1, "b": 0.3, "c": 0.1}, "min") == {"a": 1.5, "c": 1.5, "b": 3}
    assert ranks({"a": 0.1, "b": 0.3}, "max") == {"b": 1, "a": 2}


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_seeds():
    few = [0.1, 0.3, 0.2, 0.4]
    lo, hi = bootstrap_ci(few)
    assert lo <= sum(few) / 4 <= hi
    lo_many, hi_many = bootstrap_ci(few * 25)
    assert hi_many - lo_many < hi - lo
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci(few) == bootstrap_ci(few)  # seeded: the same interval every run
