"""Seconds per trial beyond training compute on the in-process path, MLflow logging included.

    python benchmarks/trial_overhead.py [--trials 48] [--out benchmarks/results/trial_overhead.json]

Runs one-epoch digits_mlp trials one at a time (FIFO, no early stopping) in a search of
`--trials` and one of `--trials / 6`, with MLflow on (SQLite) and off. Overhead =
(search wall - summed epoch_time_s); the marginal figure, (difference in overhead) /
(difference in trials), is what each extra trial costs once the search is running, with
the fixed per-search work (sampler setup, summary, test evaluation) cancelled out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from rich.console import Console

from raysweep.search import run_search
from raysweep.spec import validate

from common import machine, write_json  # benchmarks/common.py, beside this script

SPEC = {
    "name": "overhead",
    "task": "digits_mlp",
    "max_epochs": 1,
    "search": {"algorithm": "tpe", "max_concurrent": 1},
    "scheduler": {"type": "fifo"},
    "space": {
        "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
        "batch_size": {"type": "choice", "values": [128, 256]},
    },
    "fixed": {"hidden": 64},
}


def measure(n: int, tracked: bool, tmp: Path) -> dict:
    raw = {**SPEC, "name": f"overhead-{n}-{int(tracked)}", "search": {**SPEC["search"], "num_samples": n},
           "tracking": {"enabled": tracked}}
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    started = time.perf_counter()
    result = run_search(validate(raw), storage=str(tmp / "results"), tracking_uri=uri, console=Console(quiet=True))
    wall = time.perf_counter() - started
    train = sum(t["metrics"]["epoch_time_s"] for t in result.trials)
    return {"trials": n, "tracking": tracked, "wall_s": wall, "train_s": train, "overhead_s": wall - train}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--out", default="benchmarks/results/trial_overhead.json")
    args = parser.parse_args()
    small = max(2, args.trials // 6)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, logging_level=logging.WARNING, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        measure(2, True, Path(tmp))  # warm-up: imports, MLflow schema, trial actor
        for tracked in (False, True):
            rows.append(measure(small, tracked, Path(tmp)))
            rows.append(measure(args.trials, tracked, Path(tmp)))
    ray.shutdown()

    print(f"\n{'trials':>6} {'mlflow':>6} {'wall s':>8} {'train s':>8} {'overhead s':>10} {'per trial s':>11}")
    for r in rows:
        r["per_trial_s"] = r["overhead_s"] / r["trials"]
        print(f"{r['trials']:>6} {'on' if r['tracking'] else 'off':>6} {r['wall_s']:>8.2f} {r['train_s']:>8.2f} "
              f"{r['overhead_s']:>10.2f} {r['per_trial_s']:>11.4f}")
    marginal = {}
    for tracked in (False, True):
        a, b = [r for r in rows if r["tracking"] == tracked]
        marginal["on" if tracked else "off"] = (b["overhead_s"] - a["overhead_s"]) / (b["trials"] - a["trials"])
    print(f"\nmarginal overhead per trial: {marginal['on']:.4f} s with MLflow, {marginal['off']:.4f} s without "
          f"(target <= 0.1 s with MLflow)")
    write_json(args.out, {"machine": machine(), "rows": rows, "marginal_per_trial_s": marginal})
    return 0


if __name__ == "__main__":
    sys.exit(main())
