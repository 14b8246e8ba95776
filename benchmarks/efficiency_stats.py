"""The equal-compute benchmark's figures (search_efficiency.py): anytime curves, ranks across
seeds, bootstrap intervals, the compute at which a curve reaches a target. Pure functions over
plain lists and dicts, so they are tested without running a search (tests/test_efficiency_stats.py).
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Callable, Iterable


def test_metric(metric: str) -> str:
    """The test-split counterpart of a validation metric: val_loss -> test_loss, val_r2 ->
    test_r2; val_loss_best (the running minimum) -> test_loss, what its best epoch scores."""
    base = metric.removeprefix("val_").removesuffix("_best")
    return f"test_{base}"


def better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def worst(mode: str) -> float:
    return math.inf if mode == "min" else -math.inf


def anytime(trials: list[dict], events: list[tuple[float, float]], mode: str,
            test_of: Callable[[dict], float], chosen: dict) -> list[list[float]]:
    """The test metric of the incumbent against the compute spent: [epochs, device-seconds, test].

    `trials`: each {"end_t", "value", "eligible"}: when it ended (seconds from the method's
    start), its last value of the spec's metric, and whether the method's own rule could choose
    it. The incumbent at any time is the best eligible trial ended by then; a point is added when
    it changes, at the epochs and device-seconds spent by then (`events`: (t, device-seconds) of
    every epoch of every trial). The last point is the whole spend and `chosen`, the trial the
    method itself chose (its rule's tie-breaks are its own).
    """
    ordered = sorted(events)
    times = [t for t, _ in ordered]
    cumulative, total = [], 0.0
    for _, seconds in ordered:
        total += seconds
        cumulative.append(total)

    def spent(t: float) -> tuple[int, float]:
        n = _count_at_or_before(times, t)
        return n, (cumulative[n - 1] if n else 0.0)

    curve, best = [], None
    for trial in sorted((t for t in trials if t["eligible"] and t["value"] is not None), key=lambda t: t["end_t"]):
        if best is None or better(trial["value"], best["value"], mode):
            best = trial
            curve.append([*spent(trial["end_t"]), test_of(trial)])
    end = [len(ordered), total, test_of(chosen)]
    if curve and curve[-1][:2] == end[:2]:
        curve[-1] = end
    else:
        curve.append(end)
    return curve


def _count_at_or_before(times: list[float], t: float) -> int:
    import bisect

    return bisect.bisect_right(times, t)


def value_at(curve: list[list[float]], x: float, axis: int, mode: str) -> float:
    """The curve's test metric once `x` of its axis (0: epochs, 1: device-seconds) is spent;
    before its first incumbent, the worst value there is."""
    value = worst(mode)
    for point in curve:
        if point[axis] > x + 1e-9:
            break
        value = point[2]
    return value


def median_curve(curves: list[list[list[float]]], scales: list[float], grid: Iterable[float], axis: int,
                 mode: str) -> list[float]:
    """The median over seeds of each seed's curve read at `fraction * scale` (the scale: that
    seed's random-search spend), at each fraction of `grid`."""
    return [statistics.median(value_at(c, f * s, axis, mode) for c, s in zip(curves, scales)) for f in grid]


def reach(grid: list[float], values: list[float], target: float, mode: str) -> float | None:
    """The first fraction of the grid where `values` is at least as good as `target`, or None."""
    for fraction, value in zip(grid, values):
        if not better(target, value, mode):
            return fraction
    return None


def ranks(values: dict[str, float], mode: str) -> dict[str, float]:
    """Rank of each method (1 = best), ties sharing the mean of their ranks."""
    order = sorted(values, key=lambda m: values[m] if mode == "min" else -values[m])
    out, i = {}, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in order[i:j + 1]:
            out[m] = (i + j) / 2 + 1
        i = j + 1
    return out


def bootstrap_ci(xs: list[float], reps: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `xs` (seeds resampled with replacement)."""
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (math.nan, math.nan)
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(xs, k=len(xs))) for _ in range(reps))
    tail = (1 - level) / 2
    return means[int(tail * reps)], means[min(reps - 1, int((1 - tail) * reps))]
