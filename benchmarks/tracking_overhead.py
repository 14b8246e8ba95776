"""What MLflow tracking adds to a search's wall time: the same search with tracking on and off.

    python benchmarks/tracking_overhead.py [--trials 16] [--epochs 20] [--repeats 3] [--out PATH]

The search is search_spaces/digits_mlp.yaml made deterministic in the work it does: random
sampling (seeded: both runs draw the same configurations in the same order) and FIFO (no
early stopping, so every trial trains every epoch, whatever the timing), at `--trials` trials
of `--epochs` epochs. Tracking on is what a user gets by default: a parent run, a child run
per trial with its params and one point per epoch of every metric, the summary, plots, best
checkpoint and the registered model, in SQLite. The pair runs `--repeats` times, the order
alternating (off/on, on/off, ...) so drift on the machine hits both; medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from common import command, machine, own_ray, timed_search, write_json

GOAL = 0.03  # tracking adds at most 3% (issue 7)
SPEC_FILE = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"


def spec(trials: int, epochs: int, tracked: bool, run: int) -> dict:
    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw.update(name=f"tracking-{run}-{'on' if tracked else 'off'}", max_epochs=epochs,
               scheduler={"type": "fifo"}, tracking={"enabled": tracked})
    raw["search"].update(algorithm="random", num_samples=trials, max_concurrent=2)
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up search (smoke tests)")
    parser.add_argument("--out", default="benchmarks/results/tracking_overhead.json")
    args = parser.parse_args(argv)
    if min(args.trials, args.epochs, args.repeats) < 1:
        parser.error("--trials, --epochs and --repeats must be >= 1")

    runs = []
    with own_ray(num_cpus=2), tempfile.TemporaryDirectory() as tmp:
        if not args.no_warmup:  # imports, MLflow's schema, trial actors
            timed_search(spec(2, 2, True, -1), tmp)
        for i in range(args.repeats):
            for tracked in ((False, True) if i % 2 == 0 else (True, False)):
                timed = timed_search(spec(args.trials, args.epochs, tracked, i), tmp)
                epochs = timed["result"].epochs_run
                runs.append({"repeat": i, "tracking": tracked, "wall_s": timed["wall_s"], "epochs_run": epochs})
                print(f"  repeat {i}: tracking {'on ' if tracked else 'off'} {timed['wall_s']:.2f} s "
                      f"({epochs} epochs)", flush=True)

    off = statistics.median(r["wall_s"] for r in runs if not r["tracking"])
    on = statistics.median(r["wall_s"] for r in runs if r["tracking"])
    overhead = on / off - 1
    per_repeat = [b["wall_s"] / a["wall_s"] - 1 for a, b in
                  (sorted((r for r in runs if r["repeat"] == i), key=lambda r: r["tracking"])
                   for i in range(args.repeats))]
    print(f"\n{'tracking':<9} {'wall s (median)':>15}\n{'off':<9} {off:>15.2f}\n{'on':<9} {on:>15.2f}")
    print(f"\ntracking overhead: {overhead:+.1%} of search wall time (goal <= {GOAL:.0%}); per repeat: "
          + ", ".join(f"{x:+.1%}" for x in per_repeat)
          + f"; {args.trials} trials x {args.epochs} epochs, FIFO, random sampling")
    write_json(args.out, {
        "machine": machine(), "command": command("tracking_overhead.py", argv),
        "spec": "search_spaces/digits_mlp.yaml with scheduler fifo, search.algorithm random, max_concurrent 2",
        "trials": args.trials, "epochs": args.epochs, "repeats": args.repeats, "runs": runs,
        "median_wall_s": {"off": off, "on": on}, "overhead": overhead, "overhead_per_repeat": per_repeat,
        "goal": GOAL,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
