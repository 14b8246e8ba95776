"""Search efficiency at equal compute: raysweep against random search, standalone Optuna and plain Ray Tune.

    python benchmarks/search_efficiency.py [--tasks digits_mlp ...] [--seeds 0 1 ... 9]
        [--budget-trials 24] [--epochs 20] [--methods raysweep random optuna tune]
        [--set key=value ...] [--variant NAME:key=value[,key=value]] [--cpus 2]
        [--out PATH] [--png PATH] [--fresh]

Per task and seed, every method searches the same space (search_spaces/*.yaml, at the seed;
image_folder on a small folder of PNGs it writes, IMAGES, read through Ray Data by every method)
with the same compute: `--budget-trials` full trials' worth of epochs (24 x 20 = 480), what
random search without early stopping spends. Each method is what its user gets by default:

* raysweep: `run_search` on the spec as shipped, with `search.budget.epochs` set to the
  budget (it keeps sampling until the budget is spent, and never crosses it);
* random:   the same spec with `search.algorithm: random` and `scheduler.type: fifo`: the
            budget's trials, each run to max_epochs;
* optuna:   a plain `optuna.create_study` with its defaults (TPESampler seeded,
            SuccessiveHalvingPruner), trials run one after another in this process through the
            same task code and fit loop, until the budget is spent;
* tune:     plain Ray Tune: `OptunaSearch` (seeded) and `ASHAScheduler` with their defaults,
            the spec's concurrency, the same trial function (actors reused, as raysweep's are),
            stopped when the budget is spent;
* raysweep[NAME]: raysweep with `--variant` overrides.

Recorded per (task, seed, method): the test metric (the spec metric's test counterpart,
val_loss -> test_loss) of the configuration the method chose by its own rule, the epochs and
device-seconds spent, and the anytime curve: the test metric of the incumbent against epochs
and device-seconds. The summary per task: each method's mean test metric with a bootstrap 95%
interval over seeds, its mean rank among the methods, and the share of random search's compute
at which its median anytime curve reaches random search's final (median) test metric.

Runs accumulate in `--out`: each run replaces its own (task, seed, method) rows and the summary
and plot cover all of them, so the benchmark can run in parts (`--fresh` starts over). The
machine has 2 cores: Ray gets 2 CPUs and every Ray method runs 2 trials at once (`--cpus`), so
device-seconds are not inflated by oversubscription; standalone Optuna runs one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console

from raysweep.context import LocalContext
from raysweep.models import checkpoint_state
from raysweep.runsetup import data_kwargs, quiet_libraries
from raysweep.search import run_search
from raysweep.space import optuna_space
from raysweep.spec import Spec, SpecError, load_spec
from raysweep.tasks import resolve_task
from raysweep.trial import context_kwargs, run_in_process, trial_params

# benchmarks/, beside this script
from common import command, machine, own_ray, write_json
from efficiency_stats import anytime, bootstrap_ci, median_curve, ranks, reach, test_metric

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = {"digits_mlp": "digits_mlp.yaml", "digits_cnn": "digits_cnn.yaml", "tabular": "tabular_wine.yaml",
              "regression": "diabetes_regression.yaml", "wine": "tabular_wine.yaml", "image_folder": "image_folder.yaml"}
# Overrides that make a task's spec the benchmark's: breast_cancer rather than wine for
# `tabular` (on wine many configs reach val_loss < 0.001); `wine` is the held-out task the
# defaults were never tuned on.
TASK_SETTINGS = {"tabular": ["fixed.dataset=breast_cancer"]}
# The file-backed image task reads a folder of PNGs this script writes once a run
# (make_image_dataset.py, seed 0): 100 images a class at 16x16 (700 train, 150 val, 150
# test), a tenth of the shipped spec's pixels a split, so that its ten seeds of four methods
# take about an hour on 2 cores rather than ten.
IMAGES = {"per_class": 100, "size": 16}
_images: dict[str, tempfile.TemporaryDirectory] = {}
_data: dict[str, object] = {}
METHODS = ("raysweep", "random", "optuna", "tune")
GOAL_FRACTION = 0.35  # of random search's compute, for raysweep's median curve to reach its final test metric
GRID = [round(i / 100, 2) for i in range(0, 151)]  # fractions of random search's compute


# --------------------------------------------------------------------------- specs


def task_settings(task: str) -> list[str]:
    if task != "image_folder":
        return TASK_SETTINGS.get(task, [])
    if "dir" not in _images:
        from make_image_dataset import make_dataset

        _images["dir"] = tempfile.TemporaryDirectory(prefix="raysweep-eff-images-")
        make_dataset(_images["dir"].name, IMAGES["per_class"], size=IMAGES["size"], seed=0, verbose=False)
    root = Path(_images["dir"].name)
    return [f"data.{split}={root / split}" for split in ("train", "val", "test")] + [f"data.image_size={IMAGES['size']}"]


def task_data(spec: Spec):
    """The spec's `data:` splits read through Ray Data once (ingest.py), for the methods that
    run the task themselves; None for a task with its own data."""
    if spec.data is None:
        return None
    from raysweep.ingest import load

    key = spec.data.model_dump_json()
    if key not in _data:
        _data[key] = load(spec.data, say=lambda line: None)
    return _data[key]


def base_spec(task: str, seed: int, epochs: int, concurrency: int, overrides: list[str]) -> Spec:
    """The task's shipped spec at the benchmark's epochs, seed, concurrency and `--set`
    overrides; tracking off (the comparison is of search, not logging)."""
    path = ROOT / "search_spaces" / SPEC_FILES[task]
    raw_grace = load_spec(path).scheduler.grace_period
    sized = [f"seed={seed}", f"max_epochs={epochs}", f"search.max_concurrent={concurrency}", "tracking.enabled=false",
             f"name=eff-{task}-s{seed}", *task_settings(task)]
    if raw_grace > epochs:  # a tiny run (smoke test): the spec's grace period can't exceed max_epochs
        sized.append(f"scheduler.grace_period={epochs}")
    return load_spec(path, [*sized, *overrides])


def method_spec(method: str, task: str, seed: int, args, variants: dict[str, list[str]]) -> Spec:
    budget = args.budget_trials * args.epochs
    size = (task, seed, args.epochs, args.concurrency)
    if method == "random":
        return base_spec(*size, [*args.set, "search.algorithm=random", "scheduler.type=fifo",
                                 f"search.num_samples={args.budget_trials}"])
    return base_spec(*size, [*args.set, *variants.get(method, []), "search.num_samples=null",
                             f"search.budget.epochs={budget}"])


# --------------------------------------------------------------------------- runs
#
# Each method hands `measure` its trials ({"id", "config", "epochs", "value", "end_t",
# "eligible"}), every epoch's (seconds since its start, device-seconds), the trial it chose,
# and how to load a trial's last checkpoint; `measure` tests the incumbents and the choice.


def measure(spec: Spec, trials: list[dict], events: list[tuple[float, float]], chosen_id: str, state_of,
            wall_s: float) -> dict:
    task, name = resolve_task(spec.task), test_metric(spec.rank_metric)
    tested: dict[str, dict] = {}
    data = data_kwargs(task_data(spec))

    def test_of(trial: dict) -> float:
        if trial["id"] not in tested:
            tested[trial["id"]] = task.evaluate(trial_params(spec, trial["config"]), state_of(trial["id"]), spec.seed,
                                                **data)
        return tested[trial["id"]][name]

    chosen = next(t for t in trials if t["id"] == chosen_id)
    fallback = not chosen["eligible"]
    if fallback:  # its checkpoint was never saved (a trial stopped as the budget ran out): the best one that was
        chosen = _best_by_value([t for t in trials if t["eligible"]], spec.rank_mode)
        chosen_id = chosen["id"]
    points = anytime(trials, events, spec.rank_mode, test_of, chosen)
    return {
        "test": tested[chosen_id], "test_value": tested[chosen_id][name], "test_metric": name,
        "val": chosen["value"], "config": chosen["config"], "chosen_epochs": chosen["epochs"],
        "epochs": len(events), "device_s": round(sum(d for _, d in events), 3), "wall_s": round(wall_s, 3),
        "trials": len(trials), "curve": points, "metric": spec.rank_metric, "mode": spec.rank_mode,
        **({"chosen_fallback": True} if fallback else {}),
    }


def _best_by_value(trials: list[dict], mode: str) -> dict:
    sign = 1 if mode == "min" else -1
    return min((t for t in trials if t["value"] is not None), key=lambda t: sign * t["value"])


def _increments(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(t, cumulative device-hours) per epoch of one trial -> (t, device-seconds of that epoch)."""
    out, before = [], 0.0
    for t, hours in points:
        out.append((t, max(0.0, hours - before) * 3600))
        before = hours
    return out


def run_raysweep(spec: Spec) -> dict:
    """One raysweep search (any algorithm, scheduler and budget the spec names)."""
    from ray.tune import Checkpoint

    with tempfile.TemporaryDirectory(prefix="raysweep-eff-") as storage:
        result = run_search(spec, storage=storage, console=Console(file=io.StringIO()))
        trials, events, paths = [], [], {}
        for t in result.trials:
            if not t["history"]:
                continue
            trials.append({"id": t["trial_id"], "config": t["config"], "epochs": t["epochs"], "value": t["value"],
                           "end_t": t["history"][-1]["t"],
                           "eligible": t["status"] != "failed" and t["checkpoint"] is not None})
            events += _increments([(h["t"], h["device_hours"]) for h in t["history"]])
            paths[t["trial_id"]] = t["checkpoint"]
        return measure(spec, trials, events, result.best["trial_id"],
                       lambda trial_id: checkpoint_state(Checkpoint.from_directory(paths[trial_id])), result.wall_s)


def run_optuna(spec: Spec, budget: int) -> dict:
    """A standalone Optuna study with its defaults: TPE (seeded) + successive halving, one trial
    at a time, until `budget` epochs are spent (the last trial is cut short where it would cross)."""
    task, space = resolve_task(spec.task), optuna_space(spec)
    study = optuna.create_study(direction="minimize" if spec.rank_mode == "min" else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=spec.seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    started, trials, events, states = time.monotonic(), [], [], {}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))  # as a Ray trial's process
    try:
        while len(events) < budget:
            trial, cap = study.ask(space), min(spec.max_epochs, budget - len(events))
            record = {"id": str(trial.number), "config": dict(trial.params), "epochs": 0, "value": None}
            hours: list[tuple[float, float]] = []

            def on_report(metrics, checkpoint, trial=trial, record=record, hours=hours, cap=cap):
                record["epochs"], record["value"] = int(metrics["epoch"]), metrics[spec.rank_metric]
                hours.append((time.monotonic() - started, metrics["cost_device_hours"]))
                if checkpoint is not None:
                    states[record["id"]] = checkpoint
                trial.report(record["value"], record["epochs"])
                if trial.should_prune() or record["epochs"] >= cap < spec.max_epochs:
                    raise optuna.TrialPruned()

            ctx = LocalContext(on_report=on_report, data=task_data(spec), **context_kwargs(spec, time.time()))
            try:
                task.train(trial_params(spec, trial.params), ctx)
                study.tell(trial, record["value"])
                record["eligible"] = True  # study.best_trial: complete trials only
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                record["eligible"] = False
            record["end_t"] = hours[-1][0]
            trials.append(record)
            events += _increments(hours)
    finally:
        torch.set_num_threads(threads)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        chosen = str(study.best_trial.number)
    else:  # no trial ran to the end: the best pruned one, as a user would have to pick
        best = _best_by_value(trials, spec.rank_mode)
        best["eligible"], chosen = True, best["id"]
    return measure(spec, trials, events, chosen, states.__getitem__, time.monotonic() - started)


def run_tune(spec: Spec, budget: int) -> dict:
    """Plain Ray Tune with its defaults around the same trial function: OptunaSearch (seeded)
    and ASHAScheduler(max_t), the spec's concurrency, ended when `budget` epochs are reported."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    class EpochBudget(tune.Stopper):  # every result is one epoch
        def __init__(self):
            self.left = budget

        def __call__(self, trial_id, result):
            self.left -= 1
            return self.left <= 0

        def stop_all(self):
            return self.left <= 0

    started = time.monotonic()

    class Record(tune.Callback):  # when each epoch arrived, as raysweep's book times them
        def __init__(self):
            self.points: dict[str, list[tuple[float, float, float]]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.points.setdefault(trial.trial_id, []).append(
                (time.monotonic() - started, result["cost_device_hours"], result[spec.rank_metric]))

    record = Record()
    searcher = ConcurrencyLimiter(OptunaSearch(space=optuna_space(spec), metric=spec.rank_metric, mode=spec.rank_mode, seed=spec.seed),
                                  max_concurrent=spec.search.max_concurrent)
    trainable = tune.with_resources(tune.with_parameters(run_in_process, spec=spec, data=task_data(spec)),
                                    {"cpu": spec.resources.cpus_per_worker})
    with tempfile.TemporaryDirectory(prefix="raysweep-eff-tune-") as storage:
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            metric=spec.rank_metric, mode=spec.rank_mode, search_alg=searcher, scheduler=ASHAScheduler(max_t=spec.max_epochs),
            # Tune's one departure from its defaults: without it every trial starts a fresh
            # process (about 6 s here, ~130 trials a search). It changes no search decision.
            num_samples=-1, reuse_actors=True), run_config=tune.RunConfig(
            name=spec.name, storage_path=storage, stop=EpochBudget(), callbacks=[record], verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        grid = tuner.fit()
        wall = time.monotonic() - started
        results = {r.metrics["trial_id"]: r for r in grid if r.metrics and r.metrics.get("trial_id") in record.points}
        trials, events = [], []
        for trial_id, result in results.items():
            points = record.points[trial_id]
            trials.append({"id": trial_id, "config": result.config, "epochs": len(points), "value": points[-1][2],
                           "end_t": points[-1][0], "eligible": result.error is None and result.checkpoint is not None})
            events += _increments([(t, hours) for t, hours, _ in points])
        chosen = grid.get_best_result(scope="last", filter_nan_and_inf=True).metrics["trial_id"]
        return measure(spec, trials, events, chosen, lambda trial_id: checkpoint_state(results[trial_id].checkpoint),
                       wall)


def run_method(method: str, task: str, seed: int, args, variants: dict[str, list[str]]) -> dict:
    spec = method_spec(method, task, seed, args, variants)
    budget = args.budget_trials * args.epochs
    if method == "optuna":
        return run_optuna(spec, budget)
    if method == "tune":
        return run_tune(spec, budget)
    return run_raysweep(spec)


# --------------------------------------------------------------------------- report


def task_summary(rows: list[dict], methods: list[str]) -> dict:
    """One task's figures over its seeds: per method the mean test metric and its bootstrap
    interval, the mean rank and its interval, spend, and the share of random search's compute
    at which the method's median anytime curve reaches random's final median test metric."""
    mode = rows[0]["mode"]
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["seed"], r["method"]): r for r in rows}
    complete = [s for s in seeds if all((s, m) in by for m in methods)]  # ranks need every method
    seed_ranks = {s: ranks({m: by[s, m]["test_value"] for m in methods}, mode) for s in complete}
    out = {"mode": mode, "test_metric": rows[0]["test_metric"], "seeds": seeds, "ranked_seeds": complete,
           "methods": {}}
    randoms = [by[s, "random"] for s in seeds if (s, "random") in by]
    target = statistics.median(r["test_value"] for r in randoms) if randoms else None
    for method in methods:
        mine = [by[s, method] for s in seeds if (s, method) in by]
        if not mine:
            continue
        tests = [r["test_value"] for r in mine]
        rk = [seed_ranks[s][method] for s in complete]
        figures = {
            "seeds": len(mine), "test_mean": statistics.fmean(tests), "test_ci": bootstrap_ci(tests),
            "rank_mean": statistics.fmean(rk) if rk else None, "rank_ci": bootstrap_ci(rk) if rk else None,
            "epochs_mean": statistics.fmean(r["epochs"] for r in mine),
            "device_s_mean": statistics.fmean(r["device_s"] for r in mine),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
            "trials_mean": statistics.fmean(r["trials"] for r in mine),
        }
        paired = [(by[s, method], by[s, "random"]) for s in seeds if (s, method) in by and (s, "random") in by]
        if target is not None and paired:
            for axis, key in ((0, "epochs"), (1, "device_s")):
                scales = [rnd["curve"][-1][axis] for _, rnd in paired]
                curve = median_curve([row["curve"] for row, _ in paired], scales, GRID, axis, mode)
                figures[f"median_curve_{key}"] = [None if abs(v) == float("inf") else v for v in curve]  # JSON
                figures[f"reach_{key}"] = reach(GRID, curve, target, mode)
                # the method's own spend, as a share of random's: where its curve ends
                figures[f"spend_share_{key}"] = statistics.median(
                    row["curve"][-1][axis] / scale for (row, _), scale in zip(paired, scales))
        out["methods"][method] = figures
    out["random_final_median"] = target
    best_rank = min((f["rank_mean"] for f in out["methods"].values() if f["rank_mean"] is not None), default=None)
    mine = out["methods"].get("raysweep", {})
    reached = mine.get("reach_device_s")
    out["goal"] = {
        "best_mean_rank": best_rank is not None and mine.get("rank_mean") == best_rank
        and sum(f["rank_mean"] == best_rank for f in out["methods"].values()) == 1,
        "reach_device_s": reached, "reach_met": reached is not None and reached <= GOAL_FRACTION,
    }
    return out


def summary(tasks: dict[str, dict], methods: list[str]) -> None:
    for task, figs in tasks.items():
        print(f"\n{task}: {figs['test_metric']} ({figs['mode']}), seeds {len(figs['seeds'])}, "
              f"ranked over {len(figs['ranked_seeds'])}")
        print(f"  {'method':<20} {'test mean':>9} {'95% CI':>19} {'rank':>5} {'rank CI':>11} {'epochs':>7}"
              f" {'device s':>9} {'wall s':>7} {'trials':>6} {'reach rnd':>9}")
        for method in methods:
            f = figs["methods"].get(method)
            if f is None:
                continue
            ci = f"[{f['test_ci'][0]:.4f}, {f['test_ci'][1]:.4f}]"
            rank = f"{f['rank_mean']:.2f}" if f["rank_mean"] is not None else "-"
            rci = f"[{f['rank_ci'][0]:.1f}, {f['rank_ci'][1]:.1f}]" if f["rank_ci"] else "-"
            rch = f.get("reach_device_s")
            print(f"  {method:<20} {f['test_mean']:>9.4f} {ci:>19} {rank:>5} {rci:>11} {f['epochs_mean']:>7.0f}"
                  f" {f['device_s_mean']:>9.1f} {f['wall_s_mean']:>7.1f} {f['trials_mean']:>6.0f}"
                  f" {'-' if rch is None else f'{rch:.0%}':>9}")
        goal = figs["goal"]
        print(f"  goal: best mean rank {'yes' if goal['best_mean_rank'] else 'no'}; raysweep reaches random's final"
              f" test metric at {'never' if goal['reach_device_s'] is None else format(goal['reach_device_s'], '.0%')}"
              f" of its device-seconds (goal <= {GOAL_FRACTION:.0%})")


def plot(tasks: dict[str, dict], methods: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, (task, figs) in zip(axes[0], tasks.items()):
        shown = []  # the values past the goal line: the y range (the first incumbents would flatten the rest)
        for method in methods:
            f = figs["methods"].get(method, {})
            curve = f.get("median_curve_device_s")
            if curve:
                # each method's median curve ends at its own median spend
                xs = [x for x in GRID if x <= f["spend_share_device_s"] + 1e-9]
                ys = [float("nan") if v is None else v for v in curve[:len(xs)]]
                ax.step(xs, ys, where="post", color=colors[method], lw=1.5, label=method)
                shown += [y for x, y in zip(xs, ys) if x >= GOAL_FRACTION and y == y]
        if figs["random_final_median"] is not None:
            ax.axhline(figs["random_final_median"], color="grey", ls=":", lw=1)
        ax.axvline(GOAL_FRACTION, color="grey", ls="--", lw=0.8)
        if shown:
            lo, hi = min(shown), max(shown)
            ax.set_ylim(lo - 0.25 * (hi - lo or abs(lo) * 0.1), hi + 0.25 * (hi - lo or abs(hi) * 0.1))
        ax.set(xlabel="device-seconds, as a share of random search's", ylabel=f"test {figs['test_metric'][5:]}"
               " of the incumbent (median over seeds)", title=f"{task} ({len(figs['seeds'])} seeds)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


# --------------------------------------------------------------------------- main


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, body = text.partition(":")
    if not sep or not name or not body:
        raise ValueError(f"--variant {text!r}: expected NAME:key=value[,key=value]")
    return f"raysweep[{name}]", [part.strip() for part in body.split(",") if part.strip()]


def earlier_rows(path: Path, settings: dict, fresh: bool) -> tuple[list[dict], list[str]]:
    """The rows (and commands) of earlier parts in `path`, if they were run with these settings."""
    if fresh or not path.exists():
        return [], []
    data = json.loads(path.read_text())
    if "budget_trials" not in data.get("settings", {}):  # an earlier version's file: not comparable
        return [], []
    keys = ("budget_trials", "epochs", "concurrency", "set")
    if any(data["settings"].get(k) != settings[k] for k in keys):
        raise ValueError(f"{path} holds runs with other settings ({', '.join(keys)}): "
                         f"pass --fresh to start over, or --out another file")
    return data["rows"], data.get("commands", [data.get("command")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp"], choices=list(SPEC_FILES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--budget-trials", type=int, default=24,
                        help="the compute budget, in full trials of --epochs (random search's spend)")
    parser.add_argument("--epochs", type=int, default=20)
    # `--methods` with none: only the --variant searches (beside the rows --out already holds).
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="spec override for every method (e.g. fixed.lr_schedule=cosine)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="an extra raysweep method with these overrides, e.g. rf2:scheduler.reduction_factor=2")
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs of the Ray this starts")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="trials at once for the Ray methods (default: --cpus)")
    parser.add_argument("--out", default="benchmarks/results/search_efficiency.json")
    parser.add_argument("--png", default=None, help="anytime curves (default: --out with .png)")
    parser.add_argument("--fresh", action="store_true", help="drop the runs --out holds instead of adding to them")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: the summary and plot of what --out holds (with its settings)")
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or args.cpus
    if args.budget_trials < 1 or args.epochs < 1:
        parser.error("--budget-trials and --epochs must be at least 1")
    if not args.methods and not args.variant and not args.replot:
        parser.error("--methods with none needs a --variant to run")
    settings = {"budget_trials": args.budget_trials, "epochs": args.epochs, "budget_epochs": args.budget_trials * args.epochs,
                "concurrency": args.concurrency, "cpus": args.cpus, "set": args.set}
    try:
        variants = dict(parse_variant(v) for v in args.variant)
        methods = [*args.methods, *variants]
        for task in args.tasks:  # bad overrides fail here, before any run
            for method in methods:
                method_spec(method, task, 0, args, variants)
        rows, commands = earlier_rows(Path(args.out), settings, args.fresh)
    except (SpecError, ValueError) as exc:
        parser.error(str(exc))
    png = args.png or str(Path(args.out).with_suffix(".png"))

    if args.replot:
        args.tasks = []
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with own_ray(num_cpus=args.cpus) if args.tasks else contextlib.nullcontext():
        for task in args.tasks:
            for seed in args.seeds:
                for method in methods:
                    row = {"task": task, "seed": seed, "method": method, **run_method(method, task, seed, args, variants)}
                    rows = [r for r in rows if (r["task"], r["seed"], r["method"]) != (task, seed, method)] + [row]
                    print(f"{task:<11} seed {seed} {method:<18} {row['test_metric']} {row['test_value']:.4f} "
                          f"epochs {row['epochs']:>4} device {row['device_s']:6.1f}s wall {row['wall_s']:6.1f}s "
                          f"trials {row['trials']}", flush=True)

    all_methods = list(dict.fromkeys([*METHODS, *(r["method"] for r in rows)]))
    tasks = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        tasks[task] = task_summary(mine, [m for m in all_methods if any(r["method"] == m for r in mine)])
    summary(tasks, all_methods)
    plot(tasks, all_methods, png)
    ran = [] if args.replot else [command("search_efficiency.py", argv)]
    write_json(args.out, {
        "machine": machine(ray_cpus=args.cpus), "commands": [*commands, *ran],
        "settings": {**settings, "variants": variants, "goal_fraction": GOAL_FRACTION},
        "tasks": tasks, "rows": rows, "png": png,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
