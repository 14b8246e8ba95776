"""Several objectives (`metric: [val_loss, cost_usd]`): the search's Pareto front, and the
member whose model it registers.

The front is drawn from every trial of the search that has a finite value for each objective
(its last report's), finished or stopped early: a trial ASHA stopped at epoch 3 is a model that
cost what three epochs cost, and may be what a cost-bound user wants. Failed trials and runs
retraining another trial's configuration (scheduler.audit) are left out. Optuna decides who is
on it (`Study.best_trials` over an in-memory study of those trials), as the sampler does
(docs/design.md, point 27).

The rule for the registered model: the member with the best first objective among those within
the spec's `limits` on the others; when none is within them, the best first objective, with a
warning. Without limits that is the trial with the best first objective of all: the front
matters for what it shows (the plot, the tag, `raysweep report`), the limits for what is chosen.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna

from .book import FAILED, TrialBook, TrialRecord
from .space import config_params
from .spec import Spec


def objective_values(spec: Spec, rec: TrialRecord) -> list[float] | None:
    """The trial's last reported value of every objective; None if one is missing or not finite."""
    values = [rec.metrics.get(metric) for metric, _ in spec.objectives]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def candidates(book: TrialBook) -> list[TrialRecord]:
    """The trials the front is drawn from (see the module), in trial order."""
    return [rec for rec in sorted(book.records.values(), key=lambda r: r.number)
            if rec.status != FAILED and rec.retrain is None and objective_values(book.spec, rec) is not None]


def pareto_study(book: TrialBook) -> optuna.Study:
    """An in-memory study of the candidates, COMPLETE with their objectives' values (for
    `Study.best_trials` and Optuna's Pareto-front plot)."""
    spec = book.spec
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize" if mode == "min" else "maximize" for _, mode in spec.objectives],
                                study_name=spec.name)
    for rec in candidates(book):
        attrs = {"trial_id": rec.trial_id, "epochs": rec.epochs, "status": rec.status}
        try:  # the params are for the plot's hover text
            trial = optuna.trial.create_trial(values=objective_values(spec, rec), user_attrs=attrs,
                                              **dict(zip(("params", "distributions"), config_params(spec, rec.config))))
        except ValueError:  # a value outside the space: an earlier round's (--resume --samples +N with a new range)
            trial = optuna.trial.create_trial(values=objective_values(spec, rec), user_attrs=attrs)
        study.add_trial(trial)
    return study


def front(book: TrialBook, study: optuna.Study | None = None) -> list[TrialRecord]:
    """The Pareto-optimal trials, best first objective first (`study`: the book's `pareto_study`)."""
    best = (study or pareto_study(book)).best_trials
    sign = 1.0 if book.spec.rank_mode == "min" else -1.0
    return [book.records[t.user_attrs["trial_id"]] for t in sorted(best, key=lambda t: (sign * t.values[0], t.number))]


def within(spec: Spec, rec: TrialRecord) -> bool:
    """Whether the trial keeps every bound in `limits`."""
    values = dict(zip((m for m, _ in spec.objectives), objective_values(spec, rec)))
    modes = dict(spec.objectives)
    return all(values[m] <= bound if modes[m] == "min" else values[m] >= bound for m, bound in spec.limits.items())


def choose(book: TrialBook) -> dict[str, Any] | None:
    """The front, the member chosen by the rule (the module's) and whether it is within the
    limits, as the search logs it (pareto.json); sets `book.chosen`. None: no candidate."""
    spec = book.spec
    study = pareto_study(book)
    members = front(book, study)
    if not members:
        return None
    kept = [rec for rec in members if within(spec, rec)]
    # As `TrialBook.best`: a member with a checkpoint, a model to test and register, before one
    # the search stopped while its first checkpoint was being saved.
    pool = kept or members
    chosen = next((rec for rec in pool if rec.checkpoint is not None), pool[0])
    if spec.limits and not kept:
        logging.getLogger(__name__).warning("no Pareto-optimal trial is within limits %s", spec.limits)
    book.chosen = chosen.trial_id
    # An extended search (--resume --samples +N) can push earlier members off the front.
    left = [book.records[i].run_id for i in book.front if i in book.records and i not in {r.trial_id for r in members}]
    book.front = [r.trial_id for r in members]
    names = [m for m, _ in spec.objectives]
    return {
        "objectives": [{"metric": m, "mode": mode} for m, mode in spec.objectives],
        "limits": dict(spec.limits),
        "chosen": chosen.trial_id,
        "within_limits": bool(kept) or not spec.limits,
        "candidates": len(study.trials),
        "left_front": [run_id for run_id in left if run_id],  # their runs' raysweep.pareto tag turns "false"
        "front": [{"trial_id": r.trial_id, "number": r.number, "run_id": r.run_id, "status": r.status,
                   "epochs": r.epochs, **dict(zip(names, objective_values(spec, r)))} for r in members],
    }


def describe(pareto: dict[str, Any]) -> str:
    """The front as the console shows it after the search: one line per member."""
    names = [o["metric"] for o in pareto["objectives"]]
    lines = [f"Pareto front ({', '.join(names)}): {len(pareto['front'])} of {pareto['candidates']} trials"]
    for m in pareto["front"]:
        mark = "  <- chosen" if m["trial_id"] == pareto["chosen"] else ""
        values = " · ".join(f"{n} {m[n]:.4g}" for n in names)
        lines.append(f"  trial {m['number']:03d} ({m['status']}, {m['epochs']} epochs): {values}{mark}")
    if not pareto["within_limits"]:
        bounds = ", ".join(f"{k} {v:g}" for k, v in pareto["limits"].items())
        lines.append(f"warning: no member is within limits ({bounds}); chose the best {names[0]}")
    return "\n".join(lines)
