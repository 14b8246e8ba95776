"""Did early stopping judge trials on values that predict how they end?

At each rung (the epochs where ASHA compares trials: grace_period x reduction_factor^k below
max_epochs) the trials that went on past it show whether the ranking there held: the Spearman
rank correlation between their values at the rung and at the latest epoch all of them reached
afterwards (max_epochs if they all finished). Near 1: the rung ranked them as they ended;
near 0 or below: the rung's decisions were close to a coin toss, and a longer grace period
would be worth its compute. A search without early stopping is audited at the rungs its spec's
grace period and reduction factor would have used: what ASHA would have seen.
"""

from __future__ import annotations

import math

from .book import FAILED, TrialBook
from .spec import Spec
from .tracking.names import RUNG_CORR_PREFIX, RUNG_N_PREFIX

# Fewer trials than this past a rung give no correlation worth a number.
MIN_PAIRED = 3


def rungs(spec: Spec) -> list[int]:
    """ASHA's milestones below max_epochs (Tune's ASHAScheduler: grace * rf^k)."""
    out, epoch = [], spec.scheduler.grace_period
    while epoch < spec.max_epochs:
        out.append(int(epoch))
        epoch *= spec.scheduler.reduction_factor
    return sorted(set(out))


def rung_correlations(book: TrialBook) -> dict[int, dict]:
    """{rung: {"rho", "n", "against_epoch"}} for each rung with at least MIN_PAIRED trials past it."""
    from scipy.stats import spearmanr

    trials = [{e: v for _, e, v, _ in r.history if v is not None}
              for r in book.records.values() if r.confirms is None and r.status != FAILED]
    out = {}
    for rung in rungs(book.spec):
        past = [values for values in trials if rung in values and max(values) > rung]
        if len(past) < MIN_PAIRED:
            continue
        later = min(max(values) for values in past)
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
