"""Search efficiency: raysweep's TPE + ASHA against random search and standalone Optuna.

    python benchmarks/search_efficiency.py [--tasks digits_mlp digits_cnn tabular] [--seeds 0 1 2]
        [--samples 24] [--epochs 20] [--methods raysweep random optuna] [--set key=value ...]
        [--variant NAME:key=value[,key=value]] [--cpus 4] [--out PATH] [--png PATH]

Per task and seed, every method gets the same search space (search_spaces/*.yaml), the same
number of trials and the same epochs per trial:

* raysweep: `run_search` on the spec as written (Optuna TPE + ASHA, the spec's scheduler);
* random:   the same spec with `search.algorithm: random` and `scheduler: fifo` (no early stopping);
* optuna:   a plain `optuna.create_study` (TPESampler + SuccessiveHalvingPruner with the spec's
            grace period and reduction factor), trials run one after another in this process
            through the same task code and fit loop (`OptunaContext` below);
* raysweep[NAME]: raysweep with `--variant` overrides, run side by side with the rest.

Recorded per (task, seed, method): the best validation metric (the chosen trial's last
reported value, as raysweep ranks trials), the chosen config's test metrics, epochs consumed,
wall time, and the anytime curve (best value seen so far against cumulative epochs). The goal
(issue 7): TPE + ASHA within 1% of random search's best validation metric at <= 35% of its epochs.

`tabular` runs on scikit-learn's breast_cancer: on wine many configs reach val_loss < 0.001,
which cannot tell methods apart. Tracking is off (the comparison is of search, not logging).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from rich.console import Console

from raysweep.context import LocalContext
from raysweep.runsetup import quiet_libraries
from raysweep.search import run_search
from raysweep.space import optuna_space
from raysweep.spec import Spec, SpecError, load_spec
from raysweep.tasks import resolve_task
from raysweep.trial import trial_params

from common import command, machine, own_ray, write_json  # benchmarks/common.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = {"digits_mlp": "digits_mlp.yaml", "digits_cnn": "digits_cnn.yaml", "tabular": "tabular_wine.yaml",
              "regression": "diabetes_regression.yaml"}
# Overrides that make a task's spec the benchmark's: breast_cancer rather than wine (see above).
TASK_SETTINGS = {"tabular": ["fixed.dataset=breast_cancer"]}
METHODS = ("raysweep", "random", "optuna")
GOAL_GAP, GOAL_EPOCHS = 0.01, 0.35


# --------------------------------------------------------------------------- specs


def base_spec(task: str, seed: int, samples: int, epochs: int, overrides: list[str]) -> Spec:
    """The task's shipped spec at the benchmark's size, seed and `--set` overrides; tracking off."""
    path = ROOT / "search_spaces" / SPEC_FILES[task]
    raw_grace = load_spec(path).scheduler.grace_period
    sized = [f"seed={seed}", f"search.num_samples={samples}", f"max_epochs={epochs}", "tracking.enabled=false",
             f"name=eff-{task}-s{seed}", *TASK_SETTINGS.get(task, [])]
    if raw_grace > epochs:  # a tiny run (smoke test): the spec's grace period can't exceed max_epochs
        sized.append(f"scheduler.grace_period={epochs}")
    return load_spec(path, [*sized, *overrides])


# --------------------------------------------------------------------------- runs


def curve(events: list[tuple[float, float | None]], mode: str) -> list[list[float]]:
    """Anytime curve: [cumulative epochs, best value so far] at each improvement and at the end.

    `events` are (seconds, value) of every epoch of every trial; a step function, so only its
    steps (and its last point, the epochs spent) are kept.
    """
    best, out = None, []
    ordered = sorted(events, key=lambda e: e[0])
    for n, (_, value) in enumerate(ordered, start=1):
        if value is not None and (best is None or (value < best if mode == "min" else value > best)):
            best = value
            out.append([n, best])
    if out and out[-1][0] != len(ordered):
        out.append([len(ordered), best])
    return out


def run_raysweep(spec: Spec) -> dict:
    """One raysweep search (any algorithm and scheduler the spec names)."""
    with tempfile.TemporaryDirectory(prefix="raysweep-eff-") as storage:
        result = run_search(spec, storage=storage, console=Console(file=io.StringIO()))
    events = [(h["t"], h["value"]) for t in result.trials for h in t["history"]]
    return {
        "best_val": result.best["value"], "best_config": result.best["config"],
        "test": result.test_metrics, "epochs": result.epochs_run, "wall_s": result.wall_s,
        "trials": len(result.trials), "curve": curve(events, spec.mode), "metric": spec.metric,
    }


class OptunaTrial:
    """What a trial run by a plain Optuna study keeps, fed by `LocalContext`'s reports.

    Each epoch's report goes to `trial.report`; `should_prune()` raises `TrialPruned` out of the
    loop, as Optuna's pruning integrations do. The last checkpoint's model state is kept, so the
    chosen trial's model can be tested afterwards.
    """

    def __init__(self, trial: optuna.Trial, spec: Spec, started: float, events: list):
        self.trial, self.spec, self.started, self.events = trial, spec, started, events
        self.value: float | None = None
        self.epochs = 0
        self.state: dict | None = None
        self.ctx = LocalContext(max_epochs=spec.max_epochs, seed=spec.seed, checkpoint_every=1, metric=spec.metric,
                                on_report=self.on_report)

    def on_report(self, metrics, checkpoint):
        self.epochs, self.value = int(metrics["epoch"]), metrics[self.spec.metric]
        if checkpoint is not None:
            self.state = checkpoint
        self.events.append((time.monotonic() - self.started, self.value))
        self.trial.report(self.value, self.epochs)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def run_optuna(spec: Spec) -> dict:
    """A standalone Optuna study: TPE (seeded) + successive halving with the spec's rungs."""
    task, space = resolve_task(spec.task), optuna_space(spec)
    study = optuna.create_study(
        direction="minimize" if spec.mode == "min" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.search.n_startup_trials),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.scheduler.grace_period, reduction_factor=int(spec.scheduler.reduction_factor),  # Optuna: an int
            min_early_stopping_rate=0,
        ),
    )
    started, events, ended = time.monotonic(), [], []
    # Ask and tell: the study samples from the spec's space itself (`ask(fixed_distributions)`).
    for _ in range(spec.search.num_samples):
        trial = study.ask(space)
        ctx = OptunaTrial(trial, spec, started, events)
        try:
            task.train(trial_params(spec, trial.params), ctx.ctx)
            study.tell(trial, ctx.value)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        # pruned trials count too: their epochs were spent, and their last value ranks
        ended.append((ctx.value, ctx.epochs, dict(trial.params), ctx.state))
    wall = time.monotonic() - started
    sign = 1 if spec.mode == "min" else -1
    value, _, config, state = min((e for e in ended if e[0] is not None), key=lambda e: sign * e[0])
    return {
        "best_val": value, "best_config": config, "test": task.evaluate(trial_params(spec, config), state, spec.seed),
        "epochs": sum(e[1] for e in ended), "wall_s": round(wall, 3), "trials": len(ended),
        "curve": curve(events, spec.mode), "metric": spec.metric,
    }


def run_method(method: str, task: str, seed: int, args, variants: dict[str, list[str]]) -> dict:
    size = (task, seed, args.samples, args.epochs)
    if method == "random":
        return run_raysweep(base_spec(*size, [*args.set, "search.algorithm=random", "scheduler.type=fifo"]))
    if method == "optuna":
        return run_optuna(base_spec(*size, args.set))
    return run_raysweep(base_spec(*size, [*args.set, *variants.get(method, [])]))


# --------------------------------------------------------------------------- report


def baseline(random: dict, metric: str) -> float:
    """Random search's best in `metric`'s terms.

    A variant ranking by `val_loss_best` (the running minimum of val_loss) is compared with the
    lowest val_loss at any epoch of random's trials: the same trials, ranked that way.
    """
    if metric == random["metric"]:
        return random["best_val"]
    if metric == f"{random['metric']}_best":
        return random["best_any_epoch"]
    raise ValueError(f"no random-search baseline for metric {metric!r} (random ranked by {random['metric']!r})")


def goal_check(row: dict, random: dict, mode: str) -> dict:
    """Val gap (+: worse than random, as a fraction of random's) and the epochs fraction."""
    base = baseline(random, row["metric"])
    gap = (row["best_val"] - base) / abs(base)
    gap = gap if mode == "min" else -gap
    frac = row["epochs"] / random["epochs"]
    out = {"val_gap": gap, "epochs_fraction": frac, "met": gap <= GOAL_GAP and frac <= GOAL_EPOCHS}
    if row.get("best_any_epoch") is not None and random.get("best_any_epoch"):
        any_gap = (row["best_any_epoch"] - random["best_any_epoch"]) / abs(random["best_any_epoch"])
        out["val_gap_any_epoch"] = any_gap if mode == "min" else -any_gap
    return out


def plot(rows: list[dict], tasks: list[str], methods: list[str], metric: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, task in zip(axes[0], tasks):
        for method in methods:
            for i, row in enumerate(r for r in rows if r["task"] == task and r["method"] == method):
                if row["curve"]:
                    x, y = zip(*row["curve"])
                    ax.step(x, y, where="post", color=colors[method], lw=1.2, alpha=0.75,
                            label=method if i == 0 else None)
        ax.set(xlabel="cumulative epochs", ylabel=f"best {metric} so far", title=task, yscale="log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Anytime curves: one line per seed", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def summary(rows: list[dict], checks: list[dict], tasks: list[str], methods: list[str]) -> None:
    print(f"\n{'task':<11} {'method':<22} {'best val':>9} {'test acc':>9} {'epochs':>7} {'wall s':>7}"
          f" {'gap vs rnd':>10} {'epochs %':>8} {'goal':>5}")
    for task in tasks:
        for method in methods:
            mine = [r for r in rows if r["task"] == task and r["method"] == method]
            if not mine:
                continue
            mean = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
            ck = [c for c in checks if c["task"] == task and c["method"] == method]
            acc = [r["test"].get("test_accuracy") for r in mine if r["test"].get("test_accuracy") is not None]
            extra = (f" {mean([c['val_gap'] for c in ck]):>+10.1%} {mean([c['epochs_fraction'] for c in ck]):>8.0%}"
                     f" {sum(c['met'] for c in ck)}/{len(ck):<3}" if ck else "")
            print(f"{task:<11} {method:<22} {mean([r['best_val'] for r in mine]):>9.4f} {mean(acc):>9.4f}"
                  f" {mean([r['epochs'] for r in mine]):>7.0f} {mean([r['wall_s'] for r in mine]):>7.1f}{extra}")
    print(f"\nmeans over seeds; goal: within {GOAL_GAP:.0%} of random's best val at <= {GOAL_EPOCHS:.0%} of its epochs")


# --------------------------------------------------------------------------- main


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, body = text.partition(":")
    if not sep or not name or not body:
        raise ValueError(f"--variant {text!r}: expected NAME:key=value[,key=value]")
    return f"raysweep[{name}]", [part.strip() for part in body.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(SPEC_FILES), choices=list(SPEC_FILES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="spec override for every method (e.g. scheduler.grace_period=2)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="an extra raysweep method with these overrides, e.g. rf2:scheduler.reduction_factor=2")
    parser.add_argument("--cpus", type=int, default=4,
                        help="logical CPUs of the Ray this starts (the specs run 4 trials at once)")
    parser.add_argument("--out", default="benchmarks/results/search_efficiency.json")
    parser.add_argument("--png", default=None, help="anytime curves (default: --out with .png)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.epochs < 1:
        parser.error("--samples and --epochs must be at least 1")
    try:
        variants = dict(parse_variant(v) for v in args.variant)
        for task in args.tasks:  # bad overrides fail here, before any run
            base_spec(task, 0, args.samples, args.epochs, args.set)
            for extra in variants.values():
                base_spec(task, 0, args.samples, args.epochs, [*args.set, *extra])
    except (SpecError, ValueError) as exc:
        parser.error(str(exc))
    methods = [*args.methods, *variants]
    png = args.png or str(Path(args.out).with_suffix(".png"))

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, checks = [], []
    with own_ray(num_cpus=args.cpus):  # a caller's Ray (the tests') is used as it is and left running
        for task in args.tasks:
            for seed in args.seeds:
                mode = base_spec(task, seed, args.samples, args.epochs, args.set).mode
                by_method = {}
                for method in methods:
                    row = run_method(method, task, seed, args, variants)
                    # The best value at any epoch of any trial (the curve's end): what ranking by
                    # `metric: val_loss_best` would choose, next to the last-epoch ranking's choice.
                    row["best_any_epoch"] = row["curve"][-1][1] if row["curve"] else None
                    by_method[method] = row = {"task": task, "seed": seed, "method": method, **row}
                    rows.append(row)
                    print(f"{task:<11} seed {seed} {method:<22} best {row['best_val']:.4f} "
                          f"epochs {row['epochs']:>4} wall {row['wall_s']:6.1f}s", flush=True)
                if "random" in by_method:
                    for method, row in by_method.items():
                        if method != "random":
                            checks.append({"task": task, "seed": seed, "method": method,
                                           **goal_check(row, by_method["random"], mode)})

    metric = base_spec(args.tasks[0], 0, args.samples, args.epochs, args.set).metric
    summary(rows, checks, args.tasks, methods)
    plot(rows, args.tasks, methods, metric, png)
    write_json(args.out, {
        "machine": machine(ray_cpus=args.cpus), "command": command("search_efficiency.py", argv),
        "settings": {"tasks": args.tasks, "seeds": args.seeds, "samples": args.samples, "epochs": args.epochs,
                     "methods": methods, "set": args.set, "variants": variants, "metric": metric},
        "goal": {"val_gap_at_most": GOAL_GAP, "epochs_fraction_at_most": GOAL_EPOCHS},
        "rows": rows, "goal_checks": checks, "png": png,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
