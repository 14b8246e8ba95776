"""Did early stopping judge trials on values that predict how they end?

Two answers, both on the parent run. **Rank correlations**, free, from the search's own trials:
At each rung (the epochs where ASHA compares trials: grace_period x reduction_factor^k below
max_epochs) the trials that went on past it show whether the ranking there held: the Spearman
rank correlation between their values at the rung and at the latest epoch all of them reached
afterwards (max_epochs if they all finished). Near 1: the rung ranked them as they ended;
near 0 or below: the rung's decisions were close to a coin toss, and a longer grace period
would be worth its compute. A search without early stopping is audited at the rungs its spec's
grace period and reduction factor would have used: what ASHA would have seen.

**Stopping regret**, with `scheduler.audit: k`: after the search (and search.confirm), k trials
ASHA stopped, drawn at random (seeded by the spec), are trained again with their own training
seed (so they replay the epochs they ran, then go on) to `max_epochs`, as a Tune round of their
own (NAME-audit, FIFO), tracked as child runs (tag `raysweep.audits` = the stopped trial) and
billed in the ledger. The parent run gets how many of them beat the chosen trial
(`audit_beat_chosen` of `audit_runs`), by how much the best of them did (`audit_regret`, 0 if
none), and for each longer grace period (the rungs above the spec's): the epochs it would have
added to the search (every trial run at least that long) and how many of the audited trials that
beat the chosen one it would have carried past the epoch ASHA stopped them at. The chosen trial
stays the chosen one: the audit reports, it does not pick.
"""

from __future__ import annotations

import math
import random
from typing import Any

from .book import FAILED, FINISHED, STOPPED, TrialBook
from .spec import CONFIRM_KEY, Spec
from .tracking.names import RUNG_CORR_PREFIX, RUNG_N_PREFIX

# Fewer trials than this past a rung give no correlation worth a number.
MIN_PAIRED = 3


def rung_correlations(book: TrialBook) -> dict[int, dict]:
    """{rung: {"rho", "n", "against_epoch"}} for each rung with at least MIN_PAIRED trials past it."""
    from scipy.stats import spearmanr

    trials = [r.values_by_epoch() for r in book.records.values() if r.retrain is None and r.status != FAILED]
    out = {}
    for rung in book.spec.asha_rungs:
        past = [values for values in trials if rung in values and max(values) > rung]
        later = min((max(values) for values in past), default=0)
        # A trial's history may skip an epoch (a report that never came: a plain Ray Train loop's).
        past = [values for values in past if later in values]
        if len(past) < MIN_PAIRED:
            continue
        rho = spearmanr([v[rung] for v in past], [v[later] for v in past]).statistic
        if math.isfinite(rho):
            out[rung] = {"rho": float(rho), "n": len(past), "against_epoch": later}
    return out


def audit_metrics(correlations: dict[int, dict]) -> dict[str, float]:
    """The parent run's metrics: rung_corr_<epoch> and the trials it rests on, rung_n_<epoch>."""
    out = {}
    for rung, c in correlations.items():
        out[f"{RUNG_CORR_PREFIX}{rung}"] = c["rho"]
        out[f"{RUNG_N_PREFIX}{rung}"] = float(c["n"])
    return out


# --------------------------------------------------------------------------- scheduler.audit


def audit_configs(spec: Spec, book: TrialBook) -> list[dict[str, Any]]:
    """The Tune configs of the audit round: `scheduler.audit` trials ASHA stopped, drawn with
    the spec's seed, each with its own training seed (it replays, then goes on)."""
    # A trial an earlier round audited (an extended search) is not trained to the end twice.
    audited = {r.confirms for r in book.records.values() if r.retrain == "audit" and r.status == FINISHED}
    stopped = sorted((r for r in book.records.values() if r.retrain is None and r.status == STOPPED
                      and r.epochs < spec.max_epochs and r.trial_id not in audited),
                     key=lambda r: r.number)
    drawn = random.Random(f"audit:{spec.seed}").sample(stopped, min(spec.scheduler.audit, len(stopped)))
    from .trial import train_seed  # torch: once the trials are done, not as the search starts

    return [{**rec.config, CONFIRM_KEY: {"of": rec.trial_id, "seed": train_seed(spec, rec.config), "kind": "audit"}}
            for rec in sorted(drawn, key=lambda r: r.number)]


def audit_summary(spec: Spec, book: TrialBook) -> dict[str, Any] | None:
    """What the audit round found (None without audited runs or a chosen trial)."""
    chosen = book.best()
    runs = [r for r in book.records.values() if r.retrain == "audit" and r.status == FINISHED and r.value is not None]
    if chosen is None or chosen.value is None or not runs:
        return None
    sign = 1.0 if spec.rank_mode == "min" else -1.0
    stopped_at = {r.trial_id: book.records[r.confirms].epochs for r in runs}
    winners = [r for r in runs if sign * r.value < sign * chosen.value]
    best = min(runs, key=lambda r: sign * r.value)
    searched = [r for r in book.records.values() if r.retrain is None]
    graces = {}
    for grace in [g for g in spec.asha_rungs if g > spec.scheduler.grace_period] + [spec.max_epochs]:
        graces[grace] = {
            "extra_epochs": sum(max(0, grace - r.epochs) for r in searched if r.status != FAILED),
            "winners_kept": sum(stopped_at[w.trial_id] < grace for w in winners),
        }
    return {
        "metric": spec.rank_metric, "chosen": chosen.trial_id, "chosen_value": chosen.value, "runs": len(runs),
        "beat_chosen": len(winners), "regret": max(0.0, sign * (chosen.value - best.value)),
        "audited": [{"trial_id": r.confirms, "stopped_at": stopped_at[r.trial_id], "final": r.value,
                     "run_id": r.run_id} for r in runs],
        "grace": graces,
    }


def audit_summary_metrics(audited: dict[str, Any] | None) -> dict[str, float]:
    if not audited:
        return {}
    out = {"audit_runs": float(audited["runs"]), "audit_beat_chosen": float(audited["beat_chosen"]),
           "audit_regret": audited["regret"]}
    for grace, g in audited["grace"].items():
        out[f"audit_grace_{grace}_extra_epochs"] = float(g["extra_epochs"])
        out[f"audit_grace_{grace}_winners_kept"] = float(g["winners_kept"])
    return out


def describe_audit(audited: dict[str, Any]) -> str:
    line = (f"audit: {audited['beat_chosen']} of {audited['runs']} stopped trials trained to the end beat the "
            f"chosen one's {audited['metric']} {audited['chosen_value']:.4g}")
    if audited["beat_chosen"]:
        line += f" (the best by {audited['regret']:.3g})"
    alternatives = [f"grace {g}: +{v['extra_epochs']} epochs, {v['winners_kept']} kept"
                    for g, v in audited["grace"].items()]
    return line + ("; " + ", ".join(alternatives) if alternatives else "")
