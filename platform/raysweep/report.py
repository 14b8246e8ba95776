"""`raysweep report`: a search's leaderboard, status counts and cost, read from MLflow alone.

Works on a finished search and on one still running (its children's latest points), from any
machine that can reach the tracking store: no Ray, no storage path.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table

from .errors import SpecError
from .redact import redact_data
from .spec import Spec
from .totals import cost_sums, search_totals
from .tracking.names import (BEST_CONFIG_TAG, ERROR_TAG, IMPORTANCE_EPOCH_TAG, IMPORTANCE_PREFIX, KIND_TAG, METRIC_TAG, ORPHANED_TAG,
                             PARENT_TAG, PARETO_TAG, RUNG_CORR_PREFIX, RUNG_N_PREFIX, STOPPED_EARLY_TAG, TRIAL_ID_TAG,
                             trial_number)
from .tracking.uri import check_tracking_uri, refused

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def find_parent(client: MlflowClient, name_or_run_id: str, flag: str = "report"):
    """The search's parent run: by run id, else the latest search in the experiment of that name.
    `flag`: what the errors name (the command or option that asked)."""
    if _RUN_ID.match(name_or_run_id):
        try:
            run = client.get_run(name_or_run_id)
        except Exception:  # noqa: BLE001 - MLflow raises its own types per store
            raise SpecError(f"{flag}: no run {name_or_run_id!r} in this tracking store") from None
        if run.data.tags.get(KIND_TAG) != "search":
            raise SpecError(f"{flag}: run {name_or_run_id} is not a raysweep search (no raysweep.kind=search tag)")
        return run
    try:
        experiment = client.get_experiment_by_name(name_or_run_id)
    except MlflowException as exc:  # the first request: a 401, a server that is not MLflow's
        raise SpecError(refused(client.tracking_uri, exc)) from None
    if experiment is None:
        raise SpecError(f"{flag}: no experiment named {name_or_run_id!r} in this tracking store")
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`raysweep.kind` = 'search'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        raise SpecError(f"{flag}: experiment {name_or_run_id!r} holds no raysweep search")
    return runs[0]


def best_configuration(spec: Spec, search: str, tracking_uri: str | None,
                       given: tuple[str, ...] = ()) -> tuple[str, dict[str, Any], list[str]]:
    """(parent run id, hyperparameters, notes) of the best trial of a search in MLflow, for
    `raysweep train --from-search`: `search` is its experiment's name ("" for the spec's) or
    parent run id. The notes say where the search trained on something else than `spec` will
    (`search_differences`); `given`: hyperparameters the command sets itself (--set)."""
    uri = check_tracking_uri(tracking_uri, spec.tracking.uri, existing=True)
    client = MlflowClient(uri)
    parent = find_parent(client, search or spec.experiment, flag="--from-search")
    text = parent.data.tags.get(BEST_CONFIG_TAG)
    if not text:
        raise SpecError(f"--from-search: search {parent.info.run_name!r} (run {parent.info.run_id}) has no best "
                        "configuration yet: none of its trials reported a value, or it is still running")
    best = json.loads(text)
    return parent.info.run_id, best, search_differences(client, parent, best, spec, given)


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# What names a `data:` section's data; the rest (cache, shuffle_buffer, ...) is how it is read.
_DATA_IDENTITY = ("format", "train", "val", "test", "label", "features")


def search_differences(client: MlflowClient, parent, best: dict[str, Any], spec: Spec,
                       given: tuple[str, ...] = ()) -> list[str]:
    """What a run of `spec` from a search's best configuration trains on that the search did
    not: another task, another fixed value (a built-in dataset, a model size), other `data:`.
    Its hyperparameters tuned for one table and trained on another, silently, was what a
    search on a CSV given with --set, trained without those --set, did."""
    run = parent.info.run_id
    notes = []
    searched_task = parent.data.params.get("task")
    if searched_task is not None and searched_task != spec.task:
        notes.append(f"search {run} ran task {searched_task!r}; this run trains {spec.task!r}")
    for key in sorted(set(best) - set(spec.space) - set(given)):
        if key in spec.fixed and spec.fixed[key] != best[key]:
            notes.append(f"search {run} ran with {key}={_value(best[key])}; this run takes the spec's "
                         f"{key}={_value(spec.fixed[key])} (--set {key}=... to change it)")
    searched = _searched_data(client, run)
    if searched is not False:
        ours = redact_data(spec.to_dict()).get("data")
        if _data_identity(searched) != _data_identity(ours):
            notes.append(f"search {run} trained on {_data_said(searched)}; this run on {_data_said(ours)}")
    return notes


def _searched_data(client: MlflowClient, run_id: str) -> dict | None | bool:
    """The `data:` section of the spec a search logged (None: it had none); False: not known
    (no spec.yaml, a search older than it, or unreadable)."""
    import tempfile

    import yaml

    from .jobenv import scoped_env

    try:
        # MLflow draws a progress bar per download on stderr, reading the variable as each begins.
        with scoped_env({_PROGRESS_BAR: "false"}), tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, "spec.yaml", tmp)
            with open(path, encoding="utf-8") as f:
                logged = yaml.safe_load(f)
    except Exception:  # noqa: BLE001 - a note not given, never a failed command
        return False
    return logged.get("data") if isinstance(logged, dict) else False


def _value(value: Any) -> str:
    """As --set writes it: text bare, the rest as YAML reads it back (null, true, 0.1, [1, 2])."""
    return value if isinstance(value, str) else json.dumps(value)


def _data_identity(data: dict | None) -> tuple | None:
    return None if data is None else tuple(str(data.get(k)) for k in _DATA_IDENTITY)


def _data_said(data: dict | None) -> str:
    if data is None:
        return "the task's own data"
    return "data: " + ", ".join(f"{k} {data[k]}" for k in _DATA_IDENTITY if data.get(k) is not None)


def _status(run) -> str:
    if run.info.status == "RUNNING":
        return "running"
    if run.info.status in ("FAILED", "KILLED"):
        return "failed"
    return "stopped" if run.data.tags.get(STOPPED_EARLY_TAG) == "true" else "finished"


def build_report(client: MlflowClient, name_or_run_id: str) -> dict[str, Any]:
    parent = find_parent(client, name_or_run_id)
    # Several objectives are logged as "val_loss,cost_usd" and "min,min"; the tag is the first.
    names = parent.data.params.get("metric", "val_loss").split(",")
    modes = parent.data.params.get("mode", "min").split(",")
    metric, mode = parent.data.tags.get(METRIC_TAG) or names[0], modes[0]
    max_epochs = int(parent.data.params.get("max_epochs", 0))
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=50_000
    )
    # Runs a dead driver left that --resume could not continue are no trials of the search,
    # but their compute was spent: in the totals, as in the search's own summary.
    kept = [run for run in children if ORPHANED_TAG not in run.data.tags]
    trials = []
    for run in kept:
        m = run.data.metrics
        trials.append({
            "number": trial_number(run.info.run_name),
            "run_id": run.info.run_id, "trial_id": run.data.tags.get(TRIAL_ID_TAG), "name": run.info.run_name,
            "status": _status(run), "value": m.get(metric), "epochs": int(m.get("epoch", 0)),
            "cost_usd": m.get("cost_usd"), "cost_device_hours": m.get("cost_device_hours"),
            "params": dict(run.data.params), "error": run.data.tags.get(ERROR_TAG),
            "objectives": {name: m.get(name) for name in names}, "pareto": run.data.tags.get(PARETO_TAG) == "true",
        })
    scored = [t for t in trials if t["value"] is not None and t["status"] != "failed"]
    ranked = sorted(scored, key=lambda t: t["value"] if mode == "min" else -t["value"])
    counts = {s: sum(t["status"] == s for t in trials) for s in ("running", "finished", "stopped", "failed")}
    epochs_run = sum(t["epochs"] for t in trials)
    orphans = [run.data.metrics for run in children if ORPHANED_TAG in run.data.tags]
    totals = search_totals([run.data.metrics for run in kept], epochs_run=epochs_run,
                           epochs_budget=len(trials) * max_epochs, orphaned=cost_sums(orphans))
    return {
        "name": parent.info.run_name, "parent_run_id": parent.info.run_id, "status": parent.info.status,
        "metric": metric, "mode": mode, "best": ranked[0] if ranked else None, "counts": counts,
        "totals": totals, "trials": ranked + [t for t in trials if t not in ranked],
        "objectives": list(zip(names, modes)) if len(names) > 1 else None,
        "front": [t for t in ranked if t["pareto"]],
        **insight(parent),
    }


def insight(parent) -> dict[str, Any]:
    """What the search's views and audit left on the parent run: the importances (largest
    first) and the epoch they compare trials at; each rung's rank correlation."""
    m = parent.data.metrics
    shares = {k[len(IMPORTANCE_PREFIX):]: v for k, v in m.items() if k.startswith(IMPORTANCE_PREFIX)}
    epochs = [k.removeprefix(RUNG_CORR_PREFIX) for k in m if k.startswith(RUNG_CORR_PREFIX)]
    rungs = {int(e): {"rho": m[RUNG_CORR_PREFIX + e], "n": int(m.get(RUNG_N_PREFIX + e, 0))} for e in epochs}
    epoch = parent.data.tags.get(IMPORTANCE_EPOCH_TAG)
    audit = None if "audit_runs" not in m else {
        "runs": int(m["audit_runs"]), "beat_chosen": int(m["audit_beat_chosen"]), "regret": m["audit_regret"]}
    return {"importances": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
            "importance_epoch": int(epoch) if epoch else None, "rungs": dict(sorted(rungs.items())), "audit": audit}


def _label(t: dict[str, Any]) -> str:
    """The trial as the search's console and the run's name say it (`014`)."""
    return f"{t['number']:03d}" if t["number"] is not None else t["trial_id"] or t["run_id"][:8]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _param(text: str) -> str:
    """MLflow keeps params as strings: show numbers as a leaderboard does."""
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "." not in text else f"{value:.3g}"


def print_report(report: dict[str, Any], console: Console, top: int = 10) -> None:
    metric, counts, totals = report["metric"], report["counts"], report["totals"]
    console.print(f"search {report['name']} ({report['parent_run_id']}, {report['status'].lower()}): "
                  + " · ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    params = sorted({k for t in report["trials"][:top] for k in t["params"]})
    table = Table(title=f"top {min(top, len(report['trials']))} of {len(report['trials'])} trials by {metric} ({report['mode']})",
                  title_justify="left")
    for col in ("#", "trial", metric, "epochs", "status", "cost_usd", "device_h", *params):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for i, t in enumerate(report["trials"][:top], start=1):
        table.add_row(str(i), _label(t), _fmt(t["value"]), str(t["epochs"]), t["status"],
                      _fmt(t["cost_usd"]), _fmt(t["cost_device_hours"]), *(_param(t["params"].get(p, "")) for p in params))
    console.print(table)
    if report.get("objectives"):
        print_front(report, console)
    energy = "" if totals["energy_j"] is None else f" · {totals['energy_j'] / 3.6e6:.3g} kWh"
    if totals.get("co2e_kg") is not None:
        energy += f" · {totals['co2e_kg'] * 1000:.3g} g CO2e"
    console.print(
        f"total: {totals['device_hours']:.4g} device-hours · ${totals['cost_usd']:.4g} · {totals['flops']:.3g} FLOPs · "
        f"{totals['samples']:.0f} samples{energy}", highlight=False)
    console.print(_early_stopping_line(report), highlight=False)
    if report.get("importances"):
        console.print(f"importance ({metric} at epoch {report['importance_epoch']}, PED-ANOVA): "
                      + " · ".join(f"{p} {v:.2f}" for p, v in report["importances"].items()), highlight=False)
    if report.get("audit"):
        audit = report["audit"]
        console.print(f"audit: {audit['beat_chosen']} of {audit['runs']} stopped trials trained to the end beat the "
                      f"chosen trial (regret {audit['regret']:.3g})", highlight=False)
    if report.get("rungs"):
        console.print("rung audit (rank correlation with the later epoch): "
                      + " · ".join(f"epoch {e}: {r['rho']:+.2f} over {r['n']} trials" for e, r in report["rungs"].items()),
                      highlight=False)


def _early_stopping_line(report: dict[str, Any]) -> str:
    """What early stopping saved, over the trials that have ended: a running trial's epochs to
    come are not saved yet (a report of a running search said "82% saved" counting them)."""
    totals, trials = report["totals"], report["trials"]
    running = sum(t["status"] == "running" for t in trials)
    if not running or not trials:
        return (f"early stopping: {totals['epochs_run']} of {totals['epochs_budget']} epochs run "
                f"({len(trials)} trials x max_epochs), {totals['compute_saved_fraction']:.0%} saved")
    max_epochs = totals["epochs_budget"] // len(trials)
    ended = [t for t in trials if t["status"] != "running"]
    run, budget = sum(t["epochs"] for t in ended), len(ended) * max_epochs
    saved = f"{1 - run / budget:.0%} saved" if budget else "nothing ended yet"
    return (f"early stopping so far: {run} of {budget} epochs run ({len(ended)} ended trials x max_epochs; "
            f"{running} running), {saved}")


def print_front(report: dict[str, Any], console: Console) -> None:
    """Several objectives: the Pareto-optimal trials (tagged raysweep.pareto), best first objective first."""
    objectives = report["objectives"]
    names = [name for name, _ in objectives]
    console.print(f"Pareto front of {', '.join(f'{n} ({m})' for n, m in objectives)}: {len(report['front'])} trials",
                  highlight=False)
    table = Table()
    for col in ("trial", *names, "epochs", "status"):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for t in report["front"]:
        table.add_row(_label(t), *(_fmt(t["objectives"][n]) for n in names), str(t["epochs"]),
                      t["status"])
    console.print(table)
