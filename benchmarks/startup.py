"""Where a laptop search's wall time goes: raysweep, plain Ray Tune and standalone Optuna, side by side.

    python benchmarks/startup.py [--trials 24] [--epochs 20] [--rounds 1] [--methods optuna,tune,raysweep]
        [--no-trial] [--out PATH]

The same search three ways, each in a fresh Python process (so imports count, as they do for
a user): the README's default spec (`search_spaces/digits_mlp.yaml`: TPE over lr, batch size,
weight decay and dropout, ASHA, 4 trials at a time, seed 0) with `--trials` trials of at most
`--epochs` epochs. Every method trains through raysweep's own task code, so the model, data
and loop are the same:

- `optuna`: a standalone study (TPE seeded as raysweep builds it, Optuna's SuccessiveHalving
  pruner with the spec's rungs), the task's training function in this one process;
- `tune`: plain Ray Tune: a function trainable reporting each epoch with `tune.report`,
  `OptunaSearch` (same TPE) limited to 4 at a time, `ASHAScheduler`, `reuse_actors`, nothing
  tracked (Tune's own loggers as Ray ships them);
- `raysweep`: `run_search` with MLflow in a fresh SQLite file, as `raysweep search` runs it.

Phases, in seconds from the moment the parent started the process: its imports done; Ray
started; the first trial's training function entered; the first epoch's result (raysweep:
its first metric in MLflow); the last result; the search's end (raysweep: the parent run
ended in MLflow, summary and model logged; Tune and Optuna: `fit()` / the study returned);
the process's exit. Rounds alternate the order of the methods.

Then, once per round, a 2-worker Ray Train trial of the same spec (`raysweep train`, 3 epochs,
MLflow in a fresh SQLite file), in a fresh process: its imports, Ray started, `run_training`
called, both workers inside the task's training function (what Tune, Ray Train's controller,
the worker group and the process group took), the first epoch's report, `run_training`
returned, the process's exit.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # benchmarks/common.py
from common import command, machine, write_json  # noqa: E402

METHODS = ("optuna", "tune", "raysweep")
PHASES = ("imports", "ray_started", "first_trial_started", "first_result", "last_result", "search_ended", "exit")
# One 2-worker Ray Train trial (`raysweep train`, the same spec, 3 epochs): until its workers
# enter the task's function, Ray's controller, worker group and process group; then the
# task's imports, data and model, up to its first report.
TRIAL = "ray_train_2w"
TRIAL_PHASES = ("imports", "ray_started", "workers_entered", "first_report", "run_returned", "exit")
STAMPS_ENV = "RAYSWEEP_STARTUP_STAMPS"  # where each rank of the 2-worker trial writes its times
SPEC_FILE = ROOT / "search_spaces" / "digits_mlp.yaml"
GOALS = {"raysweep_over_optuna": 2.0, "first_result_s": 8.0}


# --------------------------------------------------------------------------- child processes


def _spec(trials: int, epochs: int, name: str):
    from raysweep.spec import load_spec

    return load_spec(SPEC_FILE, [f"search.num_samples={trials}", f"max_epochs={epochs}", f"name={name}"])


def child_optuna(trials: int, epochs: int, tmp: Path, stamps: dict) -> None:
    import optuna

    from raysweep.context import LocalContext
    from raysweep.space import optuna_space
    from raysweep.tasks import resolve_task
    from raysweep.trial import trial_params

    stamps["imports"] = time.time()
    spec = _spec(trials, epochs, "startup-optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task, space = resolve_task(spec.task), optuna_space(spec)
    study = optuna.create_study(
        direction="minimize" if spec.rank_mode == "min" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.search.n_startup_trials),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.scheduler.grace_period,
                                                      reduction_factor=int(spec.scheduler.reduction_factor)))

    def train(trial) -> float | None:
        stamps.setdefault("first_trial_started", time.time())
        value = None

        def on_report(metrics, _checkpoint):
            nonlocal value
            now = time.time()
            stamps.setdefault("first_result", now)
            stamps["last_result"] = now
            value = metrics[spec.rank_metric]
            trial.report(value, int(metrics["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned()

        ctx = LocalContext(max_epochs=spec.max_epochs, seed=spec.seed, checkpoints=False, on_report=on_report)
        task.train(trial_params(spec, dict(trial.params)), ctx)
        return value

    for _ in range(spec.search.num_samples):  # ask and tell: the study samples the spec's space itself
        trial = study.ask(space)
        try:
            study.tell(trial, train(trial))
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    stamps["search_ended"] = time.time()


def child_tune(trials: int, epochs: int, tmp: Path, stamps: dict) -> None:
    import logging

    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from raysweep.space import optuna_space

    stamps["imports"] = time.time()
    spec = _spec(trials, epochs, "startup-tune")
    ray.init(address="local", logging_level=logging.WARNING, log_to_driver=False)
    stamps["ray_started"] = time.time()
    class Stamps(tune.Callback):
        """When each trial's training started (its reported t0) and each result reached the driver."""

        def __init__(self):
            self.started: list[float] = []
            self.results: list[float] = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append(time.time())
            self.started.append(result["t0"])

    stamp = Stamps()
    searcher = OptunaSearch(space=optuna_space(spec), metric=spec.rank_metric, mode=spec.rank_mode,
                            sampler=optuna.samplers.TPESampler(seed=spec.seed,
                                                               n_startup_trials=spec.search.n_startup_trials))
    tuner = tune.Tuner(
        tune.with_parameters(_tune_trainable, spec=spec),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent),
            scheduler=ASHAScheduler(metric=spec.rank_metric, mode=spec.rank_mode, max_t=spec.max_epochs,
                                    grace_period=spec.scheduler.grace_period,
                                    reduction_factor=spec.scheduler.reduction_factor),
            num_samples=spec.search.num_samples, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp / "tune"), name="startup-tune", verbose=0,
                                  callbacks=[stamp]))
    tuner.fit()
    stamps["search_ended"] = time.time()
    # Observed in this driver as Tune hands each result to its callbacks (`Stamps`).
    stamps.update(first_trial_started=min(stamp.started), first_result=min(stamp.results),
                  last_result=max(stamp.results))
    ray.shutdown()


def _tune_trainable(config, spec):
    from ray import tune

    from raysweep.context import LocalContext
    from raysweep.tasks import resolve_task
    from raysweep.trial import trial_params

    t0 = time.time()
    ctx = LocalContext(max_epochs=spec.max_epochs, seed=spec.seed, checkpoints=False,
                       on_report=lambda metrics, _: tune.report({**metrics, "t0": t0}))
    resolve_task(spec.task).train(trial_params(spec, config), ctx)


def child_raysweep(trials: int, epochs: int, tmp: Path, stamps: dict) -> None:
    from rich.console import Console

    from raysweep.cli import heavy_imports

    with heavy_imports():  # as `raysweep search` imports them
        import raysweep.runsetup as runsetup
        from raysweep.search import run_search

    stamps["imports"] = time.time()
    spec = _spec(trials, epochs, "startup-raysweep")
    # run_search starts Ray itself, as `raysweep search` does (the task's splits load meanwhile),
    # and shuts it down once the trials are tested, as the command asks (shutdown_ray).
    ensure_ray = runsetup.ensure_ray

    def stamped(*args, **kwargs):
        started = ensure_ray(*args, **kwargs)
        stamps["ray_started"] = time.time()
        return started

    runsetup.ensure_ray = stamped
    result = run_search(spec, storage=str(tmp / "results"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
                        console=Console(quiet=True), shutdown_ray=True)
    stamps["parent_run_id"] = result.parent_run_id  # the rest is read from MLflow by the parent
    gc.freeze()  # as `raysweep search` ends (cli.main)


def child_ray_train(trials: int, epochs: int, tmp: Path, stamps: dict) -> None:
    from rich.console import Console

    from raysweep.cli import heavy_imports

    with heavy_imports():  # as `raysweep train` imports them
        from raysweep.runsetup import ensure_ray
        from raysweep.spec import load_spec
        from raysweep.train import run_training, train_params

    stamps["imports"] = time.time()
    spec = load_spec(SPEC_FILE, ["max_epochs=3", "name=startup-ray-train", "resources.workers_per_trial=2",
                                 "task=startup_task:StampedDigits"])
    os.environ[STAMPS_ENV] = str(tmp)  # before Ray starts: its worker processes inherit it
    # `raysweep train` loads the task's splits in a thread while Ray starts (runsetup.begin);
    # so here, where Ray is started first for its stamp. They are cached: run_training's load
    # takes them from this one.
    from raysweep.tasks import resolve_task

    loading = threading.Thread(target=resolve_task(spec.task).shared_splits, args=(spec.seed,))
    loading.start()
    ensure_ray(log_to_driver=False)
    loading.join()
    stamps["ray_started"] = time.time()  # and `run_training` called
    run_training(spec, train_params(spec, {}), storage=str(tmp / "results"),
                 tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", console=Console(quiet=True))
    stamps["run_returned"] = time.time()
    ranks = [json.loads(f.read_text()) for f in sorted(tmp.glob("rank*.json"))]
    stamps.update(workers_entered=max(r["entered"] for r in ranks), first_report=min(r["first_report"] for r in ranks))
    gc.freeze()  # as `raysweep train` ends (cli.main)


def raysweep_phases(tmp: Path, parent_run_id: str) -> dict:
    """First trial started, first and last result, search ended: as MLflow recorded them."""
    from mlflow import MlflowClient

    from raysweep.tracking.names import PARENT_TAG

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                                  max_results=1000)
    points = [m.timestamp for c in children for m in client.get_metric_history(c.info.run_id, "val_loss")]
    return {"first_trial_started": min(c.info.start_time for c in children) / 1000,
            "first_result": min(points) / 1000, "last_result": max(points) / 1000,
            "search_ended": parent.info.end_time / 1000, "trials": len(children)}


CHILDREN = {"optuna": child_optuna, "tune": child_tune, "raysweep": child_raysweep, TRIAL: child_ray_train}


def child_main(method: str, trials: int, epochs: int, tmp: Path, out: Path) -> None:
    stamps: dict = {}
    try:
        CHILDREN[method](trials, epochs, tmp, stamps)
    finally:
        out.write_text(json.dumps(stamps))


# --------------------------------------------------------------------------- parent


def run_method(method: str, trials: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"raysweep-startup-{method}-") as name:
        tmp = Path(name)
        # Its own local Ray, as on a laptop: not one a test session (RAY_ADDRESS) runs; plain
        # Tune with its loggers as Ray ships them (raysweep turns them off in its own process).
        env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")},
               "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(HERE),
                                                             os.environ.get("PYTHONPATH", "")])}
        started = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", method, "--trials", str(trials), "--epochs",
                               str(epochs), "--tmp", str(tmp)], cwd=tmp, env=env, capture_output=True, text=True)
        ended = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"{method} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        stamps = json.loads((tmp / "stamps.json").read_text())
        if method == "raysweep":
            stamps.update(raysweep_phases(tmp, stamps.pop("parent_run_id")))
        stamps["exit"] = ended
        return {p: (round(stamps[p] - started, 3) if p in stamps else None)
                for p in (TRIAL_PHASES if method == TRIAL else PHASES)}


def _print_run(r: int, label: str, phases: dict) -> None:
    print(f"round {r + 1} {label} " + "  ".join(f"{k} {v:.1f}" for k, v in phases.items() if v is not None), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=20, help="max_epochs of every trial (the spec's)")
    p.add_argument("--rounds", type=int, default=1, help="runs of every method, in alternating order")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--trial", action=argparse.BooleanOptionalAction, default=True,
                   help="also time a 2-worker Ray Train trial's start-up, once per round")
    p.add_argument("--out", default=str(HERE / "results" / "startup.json"))
    p.add_argument("--child", choices=[*METHODS, TRIAL], help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, args.trials, args.epochs, Path(args.tmp), Path(args.tmp) / "stamps.json")
        return 0

    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    trial_runs: list[dict] = []
    for r in range(args.rounds):
        for method in methods if r % 2 == 0 else reversed(methods):
            phases = run_method(method, args.trials, args.epochs)
            runs[method].append(phases)
            _print_run(r, f"{method:9s}", phases)
        if args.trial:
            trial_runs.append(run_method(TRIAL, args.trials, args.epochs))
            _print_run(r, "2-worker trial", trial_runs[-1])
    median = {m: {p: (statistics.median(v[p] for v in rs) if rs[0][p] is not None else None) for p in PHASES}
              for m, rs in runs.items()}
    out = {"command": command("startup.py", argv), "machine": machine(), "trials": args.trials, "epochs": args.epochs,
           "rounds": args.rounds, "goals": GOALS, "runs": runs, "median": median}
    if trial_runs:
        out["trial"] = {"workers": 2, "epochs": 3, "runs": trial_runs,
                        "median": {p: statistics.median(run[p] for run in trial_runs) for p in TRIAL_PHASES}}
    if "optuna" in median and "raysweep" in median:
        out["raysweep_over_optuna"] = median["raysweep"]["exit"] / median["optuna"]["exit"]
    if "tune" in median and "raysweep" in median:
        out["raysweep_over_tune"] = median["raysweep"]["exit"] / median["tune"]["exit"]
    print(f"\n{'phase (s from start)':22s}" + "".join(f"{m:>10s}" for m in methods))
    for phase in PHASES:
        print(f"{phase:22s}" + "".join(f"{'-' if median[m][phase] is None else f'{median[m][phase]:.1f}':>10s}"
                                       for m in methods))
    if "raysweep_over_optuna" in out:
        print(f"raysweep / standalone Optuna, whole process: {out['raysweep_over_optuna']:.2f}x "
              f"(goal at most {GOALS['raysweep_over_optuna']:g}x); raysweep's first result at "
              f"{median['raysweep']['first_result']:.1f} s (goal {GOALS['first_result_s']:g} s)")
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
