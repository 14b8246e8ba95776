"""Rewrite the docs' generated blocks from the code and the benchmark results.

    .venv/bin/python docs/generate.py           # rewrite every stale block
    .venv/bin/python docs/generate.py --check   # change nothing; exit 1 naming each stale file

A generated block is everything between a line `<!-- generated: NAME -->` and the next line
`<!-- end generated -->`, in README.md or docs/**/*.md; NAME is a key of BLOCKS below. Edit the
source, never the block: the spec keys come from the pydantic models in
platform/raysweep/spec.py (each field's `description=`, type, constraints and default), the
benchmark tables from benchmarks/results/*.json (the prose around them is hand-written).
Only spec.py is loaded (see `_load_spec_module`): nothing imports or starts Ray or MLflow.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load_spec_module():
    """raysweep.spec: it imports neither torch nor Ray (tests/test_structure.py holds it to
    that), so this script starts in well under a second."""
    if str(ROOT / "platform") not in sys.path:
        sys.path.insert(0, str(ROOT / "platform"))
    return importlib.import_module("raysweep.spec")


_spec = _load_spec_module()
Spec, Uniform, LogUniform, IntParam, Choice = _spec.Spec, _spec.Uniform, _spec.LogUniform, _spec.IntParam, _spec.Choice

BLOCK = re.compile(r"^(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)^(<!-- end generated -->)$", re.M | re.S)


# --------------------------------------------------------------------------- markdown


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- spec keys


def _bound(value: float) -> str:
    if isinstance(value, int) and value >= 2**16 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"  # 4294967296 -> 2^32
    return f"{value:g}"


def _constraints(metadata: list) -> list[str]:
    out = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                out.append(f"{sign} {_bound(getattr(item, attr))}")
    return out


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return ", ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        kinds = [_type_name(a) for a in args if a is not type(None)]
        kinds = ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]
        return kinds + (", or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    names = {bool: "boolean", int: "integer", float: "number", str: "text"}
    if get_origin(annotation) is None and annotation in names:
        return names[annotation]
    return "value"


def _value(field) -> str:
    """A field's type with its constraints: `integer >= 1, or null`."""
    kind = _type_name(field.annotation)
    bounds = _constraints(field.metadata)
    if any(isinstance(m, annotated_types.MinLen) and m.min_length == 1 for m in field.metadata):
        kind = kind.replace("text", "non-empty text", 1)
    if not bounds:
        return kind
    base, or_null, _ = kind.partition(", or null")
    return f"{base} {', '.join(bounds)}{or_null}"


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _section(annotation: Any) -> type[BaseModel] | None:
    for option in get_args(annotation) or (annotation,):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _row(key: str, field, owner: str) -> list[str]:
    if not field.description:
        raise SystemExit(f"docs/generate.py: {owner} has no description= in platform/raysweep/spec.py")
    return [f"`{key}`", _value(field), _default(field), field.description]


def _rows(model: type[BaseModel], prefix: str = "") -> list[list[str]]:
    """A row per key of `model`, and of each section inside it (`search.budget.usd`)."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        if section is None or key == "space":
            rows.append(_row(key, field, f"{model.__name__}.{name}"))
            continue
        if field.description:  # an optional section (`data`): what leaving it out means
            rows.append(_row(key, field, f"{model.__name__}.{name}"))
        rows += _rows(section, f"{key}.")
    return rows


def spec_keys() -> str:
    return table(["key", "value", "default", "meaning"], _rows(Spec))


def param_types() -> str:
    rows = []
    for model in (Uniform, LogUniform, IntParam, Choice):
        kind = get_args(model.model_fields["type"].annotation)[0]
        rows.append([f"`{kind}`", "`type`", f"`{kind}`", "required", " ".join((model.__doc__ or "").split())])
        for key, field in model.model_fields.items():
            if key != "type":
                rows.append([f"`{kind}`", *_row(key, field, f"{model.__name__}.{key}")])
    return table(["type", "key", "value", "default", "meaning"], rows)


# --------------------------------------------------------------------------- benchmarks


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def sig(value: float) -> str:
    """Two significant digits below 1 (0.040, 0.0064), one decimal above (17.9)."""
    return f"{value:#.2g}" if value < 1 else f"{value:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _paths(result: dict) -> tuple[dict, dict, dict]:
    """ddp_parity.py's rows: the bare script, raysweep, and the plain Ray reference."""
    bare, mine, plain = result["rows"]
    assert bare["path"].startswith("bare") and mine["path"].startswith("raysweep") and plain["path"].startswith("plain")
    return bare, mine, plain


def _rounds(result: dict) -> str:
    return f"{min(result['round_ratios']):.2f}x-{max(result['round_ratios']):.2f}x"


def _efficiency_means(result: dict, task: str, method: str) -> dict:
    rows = [r for r in result["rows"] if r["task"] == task and r["method"] == method]
    checks = [c for c in result["goal_checks"] if c["task"] == task and c["method"] == method]
    out = {
        "best_val": statistics.fmean(r["best_val"] for r in rows),
        "test_accuracy": statistics.fmean(r["test"]["test_accuracy"] for r in rows),
        "epochs": statistics.fmean(r["epochs"] for r in rows),
        "wall_s": statistics.fmean(r["wall_s"] for r in rows),
        "checks": checks,
    }
    if checks:
        out["gap"] = statistics.fmean(c["val_gap"] for c in checks)
        out["fraction"] = statistics.fmean(c["epochs_fraction"] for c in checks)
    return out


def perf_summary() -> str:
    trial, loop, ddp = load("trial_overhead.json"), load("loop_parity.json"), load("ddp_parity.json")
    long_default, long_poll = load("ddp_parity_c128.json"), load("ddp_parity_c128_poll0.5.json")
    eff, tracking, scale, ingest = (load(n) for n in ("search_efficiency.json", "tracking_overhead.json",
                                                      "scale.json", "data_ingest.json"))
    rows = []

    per_trial = trial["marginal_per_trial_s"]["raysweep"]
    rows.append(["trial overhead, in-process, MLflow on", f"at most {trial['goal_s']:g} s per trial",
                 f"{per_trial:.3f} s per trial", verdict(per_trial <= trial["goal_s"])])

    bare, _, plain = _paths(loop)
    timed = loop.get("async")
    with_async = "" if timed is None else f"; with `scheduler.report: async` {x(timed['ratio'])}"
    rows.append(["loop parity, one worker", f"at least {loop['goal_ratio']:g}x bare PyTorch",
                 f"{x(loop['ratio'])} (a plain Tune trial: {x(plain['samples_per_s'] / bare['samples_per_s'])})"
                 + with_async,
                 verdict(loop["meets_goal"]) + ("" if timed is None else f"; async {verdict(timed['meets_goal'])}")])

    bare, _, plain = _paths(ddp)
    short, long = f"{ddp['epoch_ms']['bare']:.0f} ms", f"{long_poll['epoch_ms']['bare'] / 1000:.1f} s"
    poll, default_poll = long_poll["config"]["poll_interval_s"], long_default["config"]["poll_interval_s"]
    rows.append([
        "DDP parity, two workers", f"at least {ddp['goal_ratio']:g}x bare `torch.distributed`",
        f"{x(ddp['ratio'])} at {short} epochs (plain Ray Train in Tune: "
        f"{x(plain['samples_per_s'] / bare['samples_per_s'])}); at {long} epochs {x(long_poll['ratio'])} with "
        f"{poll:g} s polling, {x(long_default['ratio'])} with the default {default_poll:g} s",
        f"{verdict(ddp['meets_goal'])} at {short}; "
        f"{verdict(long_poll['meets_goal'])} at {long} with {poll:g} s polling",
    ])

    tasks = eff["tasks"]
    ranked = [t for t, f in tasks.items() if f["goal"]["best_mean_rank"]]
    reached = [t for t, f in tasks.items() if f["goal"]["reach_met"]]
    rows.append(["search efficiency at equal compute",
                 f"raysweep: the best mean rank of test metric on every task, and its median anytime curve at "
                 f"random search's final test metric within {eff['settings']['goal_fraction']:.0%} of its "
                 f"device-seconds",
                 f"best mean rank on {len(ranked)} of {len(tasks)} tasks ({', '.join(ranked) or 'none'}); "
                 f"reached within {eff['settings']['goal_fraction']:.0%} on {len(reached)} of {len(tasks)}",
                 verdict(len(ranked) == len(reached) == len(tasks))])

    without_views = tracking.get("overhead_without_views")
    rows.append(["tracking overhead", f"at most {tracking['goal']:.0%}", f"{tracking['overhead']:+.1%}" + (
        "" if without_views is None else f"; without the views (`tracking.views: false`) {without_views:+.1%}"),
        verdict(tracking["overhead"] <= tracking["goal"]) + (
            "" if without_views is None or tracking["overhead"] <= tracking["goal"]
            else f"; without the views {verdict(without_views <= tracking['goal'])}")])
    server = load("tracking_overhead_server.json")
    rows.append([f"tracking overhead, an `mlflow server` {server['server_rtt_ms']:g} ms away", "(no goal of its own)",
                 f"{server['overhead']:+.1%}", "see [below](#a-teams-tracking-server)"])

    rows.append([f"scale: {scale['trials']:,} trials", f"driver under {scale['goal_mib'] / 1024:g} GB",
                 f"{scale['driver_rss_peak_mib']:,.0f} MiB peak, {scale['wall_s']:.1f} s",
                 verdict(scale["driver_rss_peak_mib"] <= scale["goal_mib"])])

    one, two = ingest["throughput"]
    goal = ingest["goals"]["throughput_ratio"]
    ok = [t["ray_data_vs_dataloader"] >= goal for t in (one, two)]
    rows.append(["data ingest: files streamed by Ray Data", f"at least {goal:g}x a plain DataLoader on the same files",
                 f"{x(one['ray_data_vs_dataloader'])} one worker, {x(two['ray_data_vs_dataloader'])} two; read once "
                 f"(the default when it fits): {x(one['ray_data_cached_vs_dataloader'])}, "
                 f"{x(two['ray_data_cached_vs_dataloader'])}",
                 "met" if all(ok) else "met for one worker, missed for two" if ok[0] else
                 "missed for one worker, met for two" if ok[1] else "missed when streamed"])
    goals = ingest["goals"]
    rss = ingest["rss"]
    rows.append(["data ingest: a streaming worker's memory",
                 f"peak RSS under {goals['peak_rss_mb'] / 1000:g} GB while it streams {goals['dataset_over_rss']}x that",
                 "; ".join(f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}: "
                           f"{max(r['peak_rss_mb']):,.0f} MiB peak, dataset {r['dataset_over_peak_rss']:.1f}x"
                           for r in rss),
                 verdict(all(_rss_ok(r, goals) for r in rss))])
    start = load("startup.json")
    over, first, goals = start["raysweep_over_optuna"], start["median"]["raysweep"]["first_result"], start["goals"]
    rows.append([f"start-up: the README's search, {start['trials']} trials",
                 f"at most {goals['raysweep_over_optuna']:g}x standalone Optuna's process; first result within "
                 f"{goals['first_result_s']:g} s",
                 f"{x(over)} (plain Ray Tune: {x(over / start['raysweep_over_tune'])}); first result {first:.1f} s",
                 verdict(over <= goals["raysweep_over_optuna"] and first <= goals["first_result_s"])])
    return table(["benchmark", "goal", "measured here", ""], rows)


def _rss_ok(row: dict, goals: dict) -> bool:
    return max(row["peak_rss_mb"]) <= goals["peak_rss_mb"] and row["dataset_over_peak_rss"] >= goals["dataset_over_rss"]


TRIAL_PATHS = {
    "raysweep": "raysweep, in-process, MLflow on",
    "raysweep-no-mlflow": "raysweep, in-process, MLflow off",
    "train-in-tune": "Train-in-Tune (a `TorchTrainer` per trial)",
    "optuna": "standalone Optuna",
}


def trial_overhead() -> str:
    result = load("trial_overhead.json")
    rows = [[label, " / ".join(map(str, result["sizes"][path])), f"{sig(result['marginal_per_trial_s'][path])} s"]
            for path, label in TRIAL_PATHS.items()]
    return table(["path", "trials (small / large)", "overhead per extra trial"], rows)


def loop_parity() -> str:
    rows = []
    for label, name in (("one worker", "loop_parity.json"), ("two workers, DDP", "ddp_parity.json")):
        result = load(name)
        bare, mine, plain = _paths(result)
        rows.append([label, *(f"{p['samples_per_s']:,.0f}" for p in (bare, mine, plain)),
                     f"{x(result['ratio'])} ({result['goal_ratio']:g}x)", _rounds(result),
                     x(result["vs_plain_ray_ratio"]), x(result["loop_only_ratio"])])
        if "async" in result:  # the one-worker trial with `scheduler.report: async`, same run
            timed = result["async"]
            rows.append([label + ", `scheduler.report: async`", f"{bare['samples_per_s']:,.0f}",
                         f"{timed['samples_per_s']:,.0f}", f"{plain['samples_per_s']:,.0f}",
                         f"{x(timed['ratio'])} ({result['goal_ratio']:g}x)", _rounds(timed),
                         x(timed["samples_per_s"] / plain["samples_per_s"]), "-"])
    return table(["", "bare samples/s", "raysweep samples/s", "reference samples/s", "raysweep / bare (goal)",
                  "rounds", "raysweep / reference", "raysweep's loop alone"], rows)


LONGER_EPOCHS = ("ddp_parity.json", "ddp_parity_c64.json", "ddp_parity_c64_poll0.25.json", "ddp_parity_c128.json",
                 "ddp_parity_c128_poll0.5.json")


def longer_epochs() -> str:
    rows = []
    for name in LONGER_EPOCHS:
        result = load(name)
        bare, mine, plain = _paths(result)
        label = f"{result['config']['channels']}, {result['config']['poll_interval_s']:g} s"
        added = result["added_ms_per_epoch"]
        rows.append([label + (" (above)" if name == "ddp_parity.json" else ""), f"{result['epoch_ms']['bare']:.0f} ms",
                     *(f"{p['samples_per_s']:,.0f}" for p in (bare, mine, plain)), x(result["ratio"]),
                     _rounds(result), x(result["vs_plain_ray_ratio"]),
                     f"+{added['loop']:.1f} ms, +{added['report_and_checkpoint']:.1f} ms"])
    return table(["digits_cnn channels, poll", "bare epoch", "bare samples/s", "raysweep", "plain Ray",
                  "raysweep / bare", "rounds", "raysweep / plain Ray", "added per epoch: loop, report + checkpoint"],
                 rows)


TASK_LABELS = {"tabular": "tabular (breast_cancer)", "wine": "wine (held out)",
               "image_folder": "image_folder (1,000 PNGs, 16x16)"}  # benchmarks/search_efficiency.py's TASK_SETTINGS


def _share(value: float | None) -> str:
    return "never" if value is None else f"{value:.0%}"


def search_efficiency() -> str:
    result = load("search_efficiency.json")
    rows = []
    for task, figs in result["tasks"].items():
        label = f"{TASK_LABELS.get(task, task)}, {figs['test_metric']} ({figs['mode']}), {len(figs['seeds'])} seeds"
        for method, f in figs["methods"].items():
            rank = "" if f["rank_mean"] is None else f"{f['rank_mean']:.2f} [{f['rank_ci'][0]:.1f}, {f['rank_ci'][1]:.1f}]"
            rows.append([label, method, f"{f['test_mean']:.4f} [{f['test_ci'][0]:.4f}, {f['test_ci'][1]:.4f}]", rank,
                         f"{f['trials_mean']:.0f}", f"{f['device_s_mean']:.1f}", f"{f['wall_s_mean']:.1f}",
                         _share(f.get("reach_device_s")), _share(f.get("reach_epochs"))])
            label = ""
    return table(["task", "method", "test metric: mean [95% CI]", "mean rank [95% CI]", "trials", "device s",
                  "wall s", "reaches random's final: device-s", "epochs"], rows)


# (label, results file, method in it): one run per setting, 3 seeds each.
VARIANTS = (
    ("shipped specs, a repeat run", "val_loss_best.json", "raysweep"),
    ("`metric: val_loss_best` (rank and stop on the lowest val_loss so far)", "val_loss_best.json", "raysweep[best]"),
    ("tabular only: `scheduler.grace_period: 1`", "tabular_grace1.json", "raysweep[g1]"),
    ("**`fixed.lr_schedule: cosine`** (every method)", "cosine.json", "raysweep"),
    ("tabular only: cosine + `scheduler.grace_period: 1`", "tabular_cosine_grace1.json", "raysweep[g1]"),
    ("Optuna TPE + SHA with cosine, for reference", "cosine.json", "optuna"),
)


def search_efficiency_variants() -> str:
    tasks = ["digits_mlp", "digits_cnn", "tabular"]  # the equal-trials runs' tasks
    rows = []
    for label, name, method in VARIANTS:
        result = load(f"search_efficiency_variants/{name}")
        cells, met, total = [], 0, 0
        for task in tasks:
            if task not in result["settings"]["tasks"]:
                cells.append("")
                continue
            m = _efficiency_means(result, task, method)
            cells.append(f"{m['gap']:+.1%} / {m['fraction']:.0%}")
            met += sum(c["met"] for c in m["checks"])
            total += len(m["checks"])
        rows.append([label, *cells, f"{met}/{total}"])
    return table(["setting", f"{tasks[0]} gap / epochs", *tasks[1:], "goal met"], rows)


def tracking_overhead(name: str = "tracking_overhead.json") -> str:
    result = load(name)
    per_repeat = ", ".join(f"{r:+.1%}" for r in result["overhead_per_repeat"])
    return table(["", f"wall s (median of {result['repeats']})"], [
        ["tracking off", f"{result['median_wall_s']['off']:.2f}"],
        ["tracking on", f"{result['median_wall_s']['on']:.2f}"],
        ["overhead", f"{result['overhead']:+.1%} (goal at most {result['goal']:.0%}; per repeat {per_repeat})"],
        *([["tracking on, `tracking.views: false`", f"{result['median_wall_s']['no_views']:.2f}"],
           ["overhead without the views", f"{result['overhead_without_views']:+.1%}"]]
          if "overhead_without_views" in result else []),
    ])


def scale() -> str:
    result = load("scale.json")
    return table(["trials", "wall s", "trials/s", "driver RSS at start", "driver peak RSS"], [[
        result["trials"], f"{result['wall_s']:.1f}", f"{result['trials_per_s']:.1f}",
        f"{result['driver_rss_start_mib']:.0f} MiB", f"{result['driver_rss_peak_mib']:.0f} MiB",
    ]])


def data_ingest_throughput() -> str:
    rows = []
    for i, run in enumerate(load("data_ingest.json")["throughput"]):
        per_s = run["samples_per_s"]
        unit = " samples/s" if i == 0 else ""
        rounds = ", ".join(x(r) for r in run["round_ratios"])
        rows.append([run["workers"], f"{per_s['ray_data']:,.0f}{unit}",
                     *(f"{per_s[k]:,.0f}" for k in ("ray_data_cached", "dataloader", "memory")),
                     f"{x(run['ray_data_vs_dataloader'])} ({'rounds ' if i == 0 else ''}{rounds})"])
    return table(["workers", "streamed (Ray Data)", "read once (Ray Data)", "DataLoader", "in memory",
                  "streamed / DataLoader"], rows)


def ingest_quote() -> str:
    """The README's data-at-scale sentence: issue 15's goals, from the same JSON as the tables."""
    data = load("data_ingest.json")
    one, two = data["throughput"]
    m = data["machine"]
    peak = max(max(r["peak_rss_mb"]) for r in data["rss"])
    return (f"Data at scale, measured on a {m['cpus']}-core CPU machine (torch {m['torch']}, Ray {m['ray']}): "
            f"image files streamed by Ray Data train at {x(one['ray_data_vs_dataloader'])} (one worker) and "
            f"{x(two['ray_data_vs_dataloader'])} (two) the throughput of a plain `DataLoader` over the same files "
            f"(goal 0.9x); a worker streaming {data['rss'][0]['dataset_mb'] / 1024:.2f} GiB of Parquet peaks at "
            f"{peak:,.0f} MiB resident (goal: under 1.5 GB for 5x that). [Performance](docs/performance.md#data-ingest).")


def search_quote() -> str:
    """The README's search-quality sentence (issue 19's goal), from search_efficiency.json."""
    data = load("search_efficiency.json")
    parts, met, overlap = [], True, True
    for task, figs in data["tasks"].items():
        methods = figs["methods"]
        mine, ranks = methods["raysweep"], sorted((f["rank_mean"], m) for m, f in methods.items()
                                                  if f["rank_mean"] is not None)
        place = 1 + sum(r < mine["rank_mean"] for r, _ in ranks)
        met &= place == 1 and figs["goal"]["best_mean_rank"]
        best = methods[ranks[0][1]]
        overlap &= mine["rank_ci"][0] <= best["rank_ci"][1]
        rival = next((r, m) for r, m in ranks if m != "raysweep")  # the best other method
        parts.append(f"{TASK_LABELS.get(task, task)}: {place} of {len(ranks)} (mean rank {mine['rank_mean']:.2f}, "
                     f"{'next' if place == 1 else 'best'} {rival[1]} {rival[0]:.2f})")
    budget, seeds = data["settings"]["budget_epochs"], max(len(f["seeds"]) for f in data["tasks"].values())
    verdict = ("The goal, the best mean rank on every task, is met." if met else
               "The goal, the best mean rank on every task, is not met" +
               (", though the rank intervals overlap." if overlap else "."))
    return (f"Search quality at equal compute ({budget} epochs a search, {seeds} seeds a task, the test metric of "
            f"the configuration each method chose), raysweep's default search ranked among random search, "
            f"standalone Optuna and plain Ray Tune: {'; '.join(parts)}. {verdict} "
            f"[Performance](docs/performance.md#search-efficiency-at-equal-compute).")


def data_ingest_rss() -> str:
    rows = []
    for r in load("data_ingest.json")["rss"]:
        mib = lambda values: ", ".join(f"{v:,.0f}" for v in values)  # noqa: E731
        rows.append([r["workers"], f"{r['dataset_mb'] / 1024:.2f} GiB", f"{mib(r['peak_rss_mb'])} MiB",
                     mib(r["start_rss_mb"]), f"{mib(r['peak_private_mb'])} / {mib(r['peak_shared_mb'])}",
                     f"{r['dataset_over_peak_rss']:.1f}x"])
    return table(["workers", "dataset streamed", "peak RSS per worker", "at its start",
                  "private / shared peak (MiB)", "dataset / peak RSS"], rows)


def startup() -> str:
    result = load("startup.json")
    median, methods = result["median"], [m for m in ("optuna", "tune", "raysweep") if m in result["median"]]
    names = {"optuna": "standalone Optuna", "tune": "plain Ray Tune", "raysweep": "raysweep"}
    phases = {"imports": "imports done", "ray_started": "Ray started", "first_trial_started": "first trial started",
              "first_result": "first result", "last_result": "last result", "search_ended": "search ended",
              "exit": "process exit"}
    rows = [[label, *("-" if median[m][p] is None else f"{median[m][p]:.1f}" for m in methods)]
            for p, label in phases.items()]
    return table([f"s from start ({result['trials']} trials, median of {result['rounds']})",
                  *(names[m] for m in methods)], rows)


def startup_trial() -> str:
    trial = load("startup.json")["trial"]
    median = trial["median"]
    phases = {"imports": "imports done", "ray_started": "Ray started, `run_training` called",
              "workers_entered": "both workers in the task's function", "first_report": "first epoch reported",
              "run_returned": "`run_training` returned", "exit": "process exit"}
    rows, before = [], 0.0
    for p, label in phases.items():
        rows.append([label, f"{median[p]:.1f}", f"{median[p] - before:.1f}"])
        before = median[p]
    return table([f"{trial['workers']}-worker trial, {trial['epochs']} epochs (median of {len(trial['runs'])})",
                  "s from start", "s for this phase"], rows)


def meter_overhead() -> str:
    result = load("meter_overhead.json")
    median = result["median_s_per_epoch"]
    return table(["cost meter", f"s per epoch (median of {result['repeats']})"], [
        ["no-op meter", f"{median['null']:.4f}"],
        ["real meter", f"{median['real']:.4f}"],
        ["overhead", f"{result['overhead']:+.1%} (goal at most {result['goal']:.0%})"],
    ])


def task_contract() -> str:
    """The capability table of tasks/contract.py's docstring (the module imports nothing heavy)."""
    import ast

    source = (ROOT / "platform" / "raysweep" / "tasks" / "contract.py").read_text()
    doc = ast.get_docstring(ast.parse(source)) or ""
    rows = [line for line in doc.splitlines() if line.startswith("|")]
    if not rows:
        raise SystemExit("tasks/contract.py: its docstring has no capability table")
    return "\n".join(rows)


BLOCKS = {
    "task-contract": task_contract,
    "spec-keys": spec_keys,
    "param-types": param_types,
    "perf-summary": perf_summary,
    "trial-overhead": trial_overhead,
    "loop-parity": loop_parity,
    "longer-epochs": longer_epochs,
    "search-efficiency": search_efficiency,
    "search-efficiency-variants": search_efficiency_variants,
    "tracking-overhead": tracking_overhead,
    "tracking-overhead-server": lambda: tracking_overhead("tracking_overhead_server.json"),
    "scale": scale,
    "data-ingest-throughput": data_ingest_throughput,
    "data-ingest-rss": data_ingest_rss,
    "ingest-quote": ingest_quote,
    "search-quote": search_quote,
    "meter-overhead": meter_overhead,
    "startup": startup,
    "startup-trial": startup_trial,
}


# --------------------------------------------------------------------------- files


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def render(text: str, cache: dict[str, str], where: str) -> tuple[str, list[str]]:
    """`text` with every generated block rewritten, and the names of the blocks that changed."""
    changed = []

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"{where}: unknown generated block {name!r} (known: {', '.join(BLOCKS)})")
        if name not in cache:
            cache[name] = BLOCKS[name]()
        body = f"\n{cache[name]}\n\n"
        if match["body"] != body:
            changed.append(name)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming each file whose generated blocks are stale")
    args = parser.parse_args(argv)
    cache: dict[str, str] = {}
    stale, seen = [], set()
    for path in doc_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        seen.update(m["name"] for m in BLOCK.finditer(text))
        new, changed = render(text, cache, rel)
        if not changed:
            continue
        stale.append(rel)
        if args.check:
            print(f"{rel}: stale generated block(s) {', '.join(changed)}; run .venv/bin/python docs/generate.py")
        else:
            path.write_text(new)
            print(f"{rel}: rewrote {', '.join(changed)}")
    missing = sorted(set(BLOCKS) - seen)
    if missing:
        print(f"docs: no generated block for {', '.join(missing)} (add <!-- generated: NAME --> ... "
              "<!-- end generated --> where it belongs)")
        return 1
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
