"""A search of many tiny trials on the in-process path: wall time and the driver's peak memory.

    python benchmarks/scale.py [--trials 1000] [--out PATH]

Each trial is a real raysweep trial (`run_search`, MLflow on in SQLite, random sampling,
FIFO, two at a time on this machine's two cores): digits_mlp with 16 hidden units for one
epoch, training ~1 ms of compute, so what is measured is the platform: Tune's bookkeeping,
the trial book, MLflow writes and the driver's memory as trials pile up. The driver's memory
is its resident set, sampled every 50 ms (Ray's own processes, MLflow's SQLite file and the
trial processes are not the driver).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from common import PeakRSS, command, machine, own_ray, timed_search, write_json

GOAL_MIB = 2048  # the driver under 2 GB at 1,000 trials (issue 7)


def spec(trials: int) -> dict:
    return {
        "name": f"scale-{trials}",
        "task": "digits_mlp",
        "max_epochs": 1,
        "seed": 0,
        "search": {"algorithm": "random", "num_samples": trials, "max_concurrent": 2},
        "scheduler": {"type": "fifo"},
        "space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}},
        "fixed": {"hidden": 16, "batch_size": 256},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")

    with own_ray(num_cpus=2), tempfile.TemporaryDirectory() as tmp:
        with PeakRSS() as rss:
            timed = timed_search(spec(args.trials), tmp)
    result = timed["result"]
    done = sum(1 for t in result.trials if t["status"] == "finished")
    row = {
        "trials": args.trials, "trials_finished": done, "wall_s": timed["wall_s"],
        "trials_per_s": args.trials / timed["wall_s"], "train_s": timed["train_s"],
        "driver_rss_start_mib": rss.start_mib, "driver_rss_peak_mib": rss.peak_mib,
        "driver_rss_end_mib": rss.samples_mib[-1], "driver_maxrss_mib": PeakRSS.maxrss_mib(),
    }
    print(f"\n{'trials':>6} {'finished':>8} {'wall s':>8} {'trials/s':>8} {'train s':>8} "
          f"{'driver RSS start':>16} {'peak MiB':>8}")
    print(f"{row['trials']:>6} {done:>8} {row['wall_s']:>8.1f} {row['trials_per_s']:>8.2f} {row['train_s']:>8.2f} "
          f"{row['driver_rss_start_mib']:>16.0f} {row['driver_rss_peak_mib']:>8.0f}")
    print(f"goal: driver under {GOAL_MIB} MiB at 1000 trials")
    write_json(args.out, {"machine": machine(), "command": command("scale.py", argv), **row, "goal_mib": GOAL_MIB,
                          "spec": spec(args.trials)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
