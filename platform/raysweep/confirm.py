"""search.confirm: before a model is registered, retrain the best configurations with fresh
seeds and choose by the mean, not by one lucky run.

The best single trial of a search is the minimum of many noisy values: the configuration
behind it is often good and its run lucky. With `search: {confirm: {top_k: 3, seeds: 3}}`,
the 3 best configurations among trials that ran `max_epochs` are each trained again with 3
fresh training seeds (model initialisation and batch order, `ctx.train_seed`; the data split
stays the spec's seed's, so every run is validated, and the model tested, on the same split).
They run as a Tune round of their own (experiment NAME-confirm, FIFO), tracked as child runs
like any trial (tag `raysweep.confirms` = the trial retrained), billed in the ledger and
counted against `search.budget` (a budgeted search keeps room for them: `reserve_epochs`).

The configuration with the best mean over its runs (the original trial and the runs that
finished) is chosen, and of its runs the best one's checkpoint is registered. The parent run
gets `confirm_mean_<metric>` and `confirm_std_<metric>` of the chosen configuration, and
`confirm.json` with every candidate's values.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from typing import Any

from .book import FINISHED, TrialBook, TrialRecord
from .spec import CONFIRM_KEY, Spec


def confirm_seeds(seed: int, n: int) -> list[int]:
    """`n` training seeds for confirming runs: the first 4 bytes of SHA-256 of
    "confirm:<seed>:<i>" (fixed, unrelated to the spec's seed and to each other)."""
    return [int.from_bytes(hashlib.sha256(f"confirm:{seed}:{i}".encode()).digest()[:4], "little")
            for i in range(n)]


def reserve_epochs(spec: Spec) -> int:
    """The epochs confirmation will train: what a budgeted search leaves room for."""
    confirm = spec.search.confirm
    return 0 if confirm is None else confirm.top_k * confirm.seeds * spec.max_epochs


def candidates(book: TrialBook, top_k: int) -> list[TrialRecord]:
    """The `top_k` best trials that ran `max_epochs` (stopped ones' values are of fewer epochs);
    if none did, the best ones that ran at all."""
    ranked = [r for r in book.ranked() if r.confirms is None]
    finished = [r for r in ranked if r.status == FINISHED]
    return (finished or ranked)[:top_k]


def confirm_configs(spec: Spec, book: TrialBook) -> list[dict[str, Any]]:
    """The Tune configs of the confirming runs: each candidate's, with a fresh seed each.

    A run an earlier round already finished (an extended search, `--resume --samples +N`, whose
    candidates were confirmed before; a driver that died during confirmation) is not run again:
    with the same seed it would train the same model, and its value would count twice."""
    seeds = confirm_seeds(spec.seed, spec.search.confirm.seeds)
    done = {(r.confirms, r.config.get(CONFIRM_KEY, {}).get("seed")) for r in _confirming(book)}
    return [{**rec.config, CONFIRM_KEY: {"of": rec.trial_id, "seed": seed}}
            for rec in candidates(book, spec.search.confirm.top_k) for seed in seeds
            if (rec.trial_id, seed) not in done]


def _confirming(book: TrialBook, of: str | None = None) -> list[TrialRecord]:
    """Finished confirming runs with a finite value (of one trial, if given); not the audit's
    runs, which retrain a stopped trial for another purpose (audit.py)."""
    return [r for r in book.records.values() if r.retrain == "confirm" and (of is None or r.confirms == of)
            and r.status == FINISHED and r.value is not None and math.isfinite(r.value)]


def choose(spec: Spec, book: TrialBook) -> dict[str, Any] | None:
    """Choose by the mean over each candidate's runs; set `book.chosen` to the best run of the
    chosen configuration. Returns what the parent run logs (None without candidates)."""
    top = candidates(book, spec.search.confirm.top_k)
    if not top:
        return None
    sign = 1.0 if spec.rank_mode == "min" else -1.0
    rows = []
    for rec in top:
        runs = [rec, *_confirming(book, rec.trial_id)]
        values = [r.value for r in runs]
        rows.append({"trial_id": rec.trial_id, "number": rec.number, "config": rec.config, "values": values,
                     "run_ids": [r.run_id for r in runs], "mean": statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "best_run": min(runs, key=lambda r: sign * r.value).trial_id})
    chosen = min(rows, key=lambda row: sign * row["mean"])
    book.chosen = chosen["best_run"]
    return {"metric": spec.rank_metric, "mode": spec.rank_mode, "chosen": chosen["trial_id"], "registered": chosen["best_run"],
            "candidates": rows}


def summary_metrics(spec: Spec, confirmed: dict[str, Any] | None) -> dict[str, float]:
    if not confirmed:
        return {}
    row = next(r for r in confirmed["candidates"] if r["trial_id"] == confirmed["chosen"])
    return {f"confirm_mean_{spec.rank_metric}": row["mean"], f"confirm_std_{spec.rank_metric}": row["std"],
            "confirm_runs": float(len(row["values"]))}


def describe(confirmed: dict[str, Any]) -> str:
    """One line for the console: each candidate's mean and spread, the chosen one marked."""
    parts = []
    for row in confirmed["candidates"]:
        mark = "*" if row["trial_id"] == confirmed["chosen"] else ""
        parts.append(f"{mark}trial {row['number']:03d} {row['mean']:.4g} ± {row['std']:.2g} (n={len(row['values'])})")
    return f"confirmed {confirmed['metric']} (mean ± sd over fresh seeds): " + ", ".join(parts)
