"""Seconds per trial beyond training compute: raysweep's in-process path, Train-in-Tune, Optuna.

    python benchmarks/trial_overhead.py [--trials 48] [--train-in-tune-trials 12] [--paths a,b] [--out PATH]

The same one-epoch digits_mlp trials (TPE over lr and batch size, seed 0, one trial at a
time, no early stopping) run four ways:

- `raysweep`: `run_search` on the in-process path, MLflow on (SQLite), as users run it;
- `raysweep-no-mlflow`: the same with `tracking.enabled: false`;
- `train-in-tune`: Ray's documented pattern for Tune + Train V2, a Tune function trainable
  that builds a one-worker `TorchTrainer` per trial and calls `.fit()`, metrics reaching Tune
  through `TuneReportCallback` (Ray Train's defaults otherwise); slow (a worker group starts
  per trial), so it runs `--train-in-tune-trials`, not `--trials`;
- `optuna`: standalone `study.optimize` calling the task's training function in this process.

Every path trains through raysweep's own task code (the shared fit loop), so training compute
is the same; overhead = wall - summed `epoch_time_s`. The marginal figure, (difference in
overhead) / (difference in trials) between a search of N trials and one of N/6, is what each
extra trial costs once the search runs, with fixed per-search work (Ray start-up excluded,
sampler setup, summary, test evaluation) cancelled out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py, beside this script
from common import command, machine, marginal, own_ray, timed_search, train_seconds, train_task_in_process, write_json

GOAL_S = 0.1  # per trial, tracking included (issue 7)
TASK = "digits_mlp"
SEED = 0
SPEC = {
    "name": "overhead",
    "task": TASK,
    "max_epochs": 1,
    "seed": SEED,
    "search": {"algorithm": "tpe", "max_concurrent": 1},
    "scheduler": {"type": "fifo"},
    "space": {
        "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
        "batch_size": {"type": "choice", "values": [128, 256]},
    },
    "fixed": {"hidden": 64},
}


def raysweep_path(n: int, tmp: Path, tracked: bool) -> dict:
    raw = {**SPEC, "name": f"overhead-{n}-{int(tracked)}", "search": {**SPEC["search"], "num_samples": n},
           "tracking": {"enabled": tracked}}
    timed = timed_search(raw, str(tmp))
    return {"wall_s": timed["wall_s"], "train_s": timed["train_s"], "trials_run": len(timed["result"].trials)}


def optuna_path(n: int, tmp: Path) -> dict:
    """`study.optimize` with the task's training function, TPE built as raysweep builds it."""
    import optuna
    import torch

    from raysweep.space import build_sampler
    from raysweep.spec import validate

    spec = validate({**SPEC, "search": {**SPEC["search"], "num_samples": n}})
    torch.set_num_threads(1)  # as a raysweep trial with cpus_per_worker: 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reports: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        params = {**spec.fixed, "lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
                  "batch_size": trial.suggest_categorical("batch_size", [128, 256])}
        epochs = train_task_in_process(TASK, params, max_epochs=spec.max_epochs, seed=SEED)
        reports.extend(epochs)
        return epochs[-1][spec.rank_metric]

    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=build_sampler(spec))
    study.optimize(objective, n_trials=n)
    return {"wall_s": time.perf_counter() - started, "train_s": train_seconds(reports), "trials_run": len(study.trials)}


def _train_worker(config: dict) -> None:
    """The Ray Train worker: the task's training function, each epoch sent with ray.train.report."""
    import ray.train
    import torch

    torch.set_num_threads(1)
    train_task_in_process(TASK, config, max_epochs=1, seed=SEED, on_report=ray.train.report)


def _train_driver(config: dict, storage: str) -> None:
    """The documented Tune + Train V2 pattern: one TorchTrainer per Tune trial."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysweep.distributed import _pin_cluster_address

    # Not part of the pattern, no cost: lets Ray Train free a finished group's CPUs when other
    # Rays run on this machine (raysweep's distributed.py says why).
    _pin_cluster_address()
    TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name=f"train-{tune.get_context().get_trial_id()}", storage_path=storage,
                             callbacks=[TuneReportCallback()]),
    ).fit()


def train_in_tune_path(n: int, tmp: Path) -> dict:
    from ray import cloudpickle, tune
    from ray.tune.search.optuna import OptunaSearch

    from raysweep.space import build_sampler, optuna_space
    from raysweep.spec import validate

    # Ray's workers may not have benchmarks/ on their path: send this module's functions and
    # common.py's by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(common)
    spec = validate({**SPEC, "search": {**SPEC["search"], "num_samples": n}})
    reports: list[dict] = []

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            reports.append(result)

    storage = str(tmp / f"train-in-tune-{n}")
    started = time.perf_counter()
    tune.Tuner(
        # The trial's own process only drives the worker group, which holds the CPU.
        tune.with_resources(tune.with_parameters(_train_driver, storage=storage),
                            tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}])),
        param_space={**spec.fixed},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=optuna_space(spec), metric=spec.rank_metric, mode=spec.rank_mode,
                                    sampler=build_sampler(spec)),
            num_samples=n, max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(name=f"tune-{n}", storage_path=storage, callbacks=[Collect()], verbose=0),
    ).fit()
    return {"wall_s": time.perf_counter() - started, "train_s": train_seconds(reports), "trials_run": n,
            "reports_received": len(reports)}


PATHS = {
    "raysweep": lambda n, tmp: raysweep_path(n, tmp, True),
    "raysweep-no-mlflow": lambda n, tmp: raysweep_path(n, tmp, False),
    "train-in-tune": train_in_tune_path,
    "optuna": optuna_path,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48, help="trials of the large search (>= 2)")
    parser.add_argument("--train-in-tune-trials", type=int, default=12,
                        help="trials of Train-in-Tune's large search (~15 s each); 0 skips it")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated paths to run (default: all of {', '.join(PATHS)})")
    parser.add_argument("--no-warmup", action="store_true", help="skip each path's warm-up search (smoke tests)")
    parser.add_argument("--out", default="benchmarks/results/trial_overhead.json")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.train_in_tune_trials == 1 or args.train_in_tune_trials < 0:
        parser.error("--trials must be >= 2 and --train-in-tune-trials 0 or >= 2")
    chosen = args.paths.split(",")
    if unknown := [p for p in chosen if p not in PATHS]:
        parser.error(f"--paths: unknown path {unknown[0]!r} (known: {', '.join(PATHS)})")

    sizes = {name: args.trials for name in PATHS}
    sizes["train-in-tune"] = args.train_in_tune_trials
    sizes = {name: n for name, n in sizes.items() if name in chosen}
    rows = []
    with own_ray(num_cpus=2), tempfile.TemporaryDirectory() as tmp:
        for name, run in PATHS.items():
            large = sizes.get(name, 0)
            if not large:
                continue
            if not args.no_warmup:  # imports, MLflow's schema, the trial actor, Train's first group
                run(1, Path(tmp))
            for n in (max(1, large // 6), large):
                row = {"path": name, "trials": n, **run(n, Path(tmp))}
                row["overhead_s"] = row["wall_s"] - row["train_s"]
                row["per_trial_s"] = row["overhead_s"] / n
                rows.append(row)
                print(f"  {name}: {n} trials in {row['wall_s']:.1f} s", flush=True)

    print(f"\n{'path':<20} {'trials':>6} {'wall s':>8} {'train s':>8} {'overhead s':>10} {'per trial s':>11}")
    for r in rows:
        print(f"{r['path']:<20} {r['trials']:>6} {r['wall_s']:>8.2f} {r['train_s']:>8.2f} "
              f"{r['overhead_s']:>10.2f} {r['per_trial_s']:>11.4f}")
    marginals = {}
    for name in PATHS:
        small_large = [r for r in rows if r["path"] == name]
        if len(small_large) == 2:
            marginals[name] = marginal(*small_large)
    print("\nmarginal overhead per extra trial (s):")
    for name, value in marginals.items():
        print(f"  {name:<20} {value:.4f}")
    print(f"goal: raysweep (MLflow on) <= {GOAL_S} s per trial")
    write_json(args.out, {
        "machine": machine(), "command": command("trial_overhead.py", argv),
        "task": TASK, "epochs_per_trial": 1, "sizes": {k: [max(1, v // 6), v] for k, v in sizes.items() if v},
        "note": "train-in-tune runs --train-in-tune-trials (default 12), the other paths --trials (default 48); "
                "train-in-tune uses Ray Train's defaults (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S 2 s)",
        "rows": rows, "marginal_per_trial_s": marginals, "goal_s": GOAL_S,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
