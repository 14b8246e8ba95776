"""What the cost meter adds to an epoch: the fit loop with the real meter against a no-op one.

    python benchmarks/meter_overhead.py [--epochs 20] [--repeats 5] [--out PATH]

Same task (digits_cnn), data, seed and thread count; runs alternate (null, real, null, ...)
so drift on the machine hits both; the median of the repeats is compared. The real meter's
costs: one FlopCounterMode forward + backward per trial, a rusage call per report, a few
float additions per epoch (and, on GPU, an NVML read per epoch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from raysweep.context import LocalContext
from raysweep.cost import Meter
from raysweep.tasks.digits import DigitsCNN, digits_splits

from common import machine, write_json  # benchmarks/common.py, beside this script

GOAL = 0.02


class NullMeter(Meter):
    def count_flops(self, *args, **kwargs):
        self.flops_per_sample = 0.0

    def add_epoch(self, *args, **kwargs):
        pass

    def metrics(self):
        return {}


def run(null: bool, epochs: int) -> float:
    meter = {"cpus_per_worker": 1, "cpu_hour_usd": 0.05}
    ctx = LocalContext(max_epochs=epochs, seed=0, checkpoints=False, meter=NullMeter() if null else meter)
    started = time.perf_counter()
    DigitsCNN().train({"lr": 1e-3, "batch_size": 64, "channels": 16}, ctx)
    return (time.perf_counter() - started) / epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/meter_overhead.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    digits_splits(0)  # load once, outside the timings
    run(True, 2)  # warm-up: imports, allocator
    times = {"null": [], "real": []}
    for _ in range(args.repeats):
        times["null"].append(run(True, args.epochs))
        times["real"].append(run(False, args.epochs))
    null, real = statistics.median(times["null"]), statistics.median(times["real"])
    overhead = real / null - 1
    print(f"{'meter':<6} {'s/epoch (median)':>17}\n{'none':<6} {null:>17.4f}\n{'real':<6} {real:>17.4f}")
    print(f"\nmetering overhead: {overhead:+.2%} of epoch time (goal <= {GOAL:.0%}), "
          f"digits_cnn, {args.epochs} epochs x {args.repeats} repeats, 1 thread")
    write_json(args.out, {"machine": machine(), "epochs": args.epochs, "repeats": args.repeats, "times_s": times,
                          "median_s_per_epoch": {"null": null, "real": real}, "overhead": overhead, "goal": GOAL})
    return 0


if __name__ == "__main__":
    sys.exit(main())
