"""Optuna's searcher as raysweep runs it: Tune's `OptunaSearch`, telling the study what really
happened to each trial.

Tune's own `OptunaSearch` tells Optuna that a trial ASHA stopped at epoch 1 COMPLETE with its
1-epoch value, so TPE ranks a 1-epoch loss against 20-epoch ones (a fast starter looks like a
winner, a slow one like a loser). Here such a trial is PRUNED at the epoch it reached, with
its value at every epoch as intermediate values, the way Optuna records the trials its own
pruners stop; TPE then ranks pruned trials below finished ones, the furthest-trained first
(docs/design.md, point 22). Intermediate values are keyed by epoch (Tune's
`training_iteration` counts reports, which a restarted trial repeats).

With concurrency, TPE's random start-up trials would flood the search: TPE samples at random
until `n_startup_trials` trials have *finished*, so with 4 running at once it hands out up to
3 extra random ones. `suggest` waits (Tune asks again later) once as many start-up trials as
TPE asked for are running.

With several objectives (`metric: [val_loss, cost_usd]`) the study is multi-objective, which
keeps no intermediate values: a stopped trial is PRUNED without values, a finished one
COMPLETE with every objective's last value, or FAIL if one is missing (docs/design.md, point 27).
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .book import FAILED, STOPPED, TrialRecord
from .budget import FINISHED, WAIT, Budget
from .ray_internals import optuna_study
from .space import build_sampler, optuna_space
from .spec import Spec

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class SweepSearch(OptunaSearch):
    """`OptunaSearch` with stopped trials PRUNED (see the module) and start-up trials bounded."""

    def __init__(self, spec: Spec, round_no: int = 0, prior: dict[str, TrialRecord] | None = None,
                 budget: Budget | None = None):
        # Several objectives: Tune's searcher makes a multi-objective study (TPE models them all).
        super().__init__(space=optuna_space(spec), metric=spec.metric, mode=[m for _, m in spec.objectives]
                         if spec.multi_objective else spec.mode, sampler=build_sampler(spec, round_no))
        self.spec_metrics = [m for m, _ in spec.objectives]
        self.budget = budget  # this driver's (search.budget): whether another trial fits
        self.max_epochs = spec.max_epochs
        self.n_startup = spec.search.n_startup_trials if spec.search.algorithm == "tpe" else 0
        self._last_step: dict[str, int] = {}
        for rec in (prior or {}).values():
            self.add_prior(rec, spec)

    # Tune pickles the searcher (tuner.pkl) and saves its state (`save`, the whole __dict__);
    # the budget reads this driver's book, and a restored search is given its own (tuner.py).
    def __getstate__(self):
        return {**self.__dict__, "budget": None}

    def save(self, checkpoint_path: str) -> None:
        budget, self.budget = self.budget, None
        try:
            super().save(checkpoint_path)
        finally:
            self.budget = budget

    def restore(self, checkpoint_path: str) -> None:
        budget = self.budget
        super().restore(checkpoint_path)
        self.budget = budget

    @property
    def study(self) -> optuna.Study:
        return optuna_study(self)

    def add_prior(self, rec: TrialRecord, spec: Spec) -> None:
        """An earlier round's trial (`--resume --samples +N`) in the study as it ended: finished
        (COMPLETE) or stopped early (PRUNED), with its value and each epoch's as intermediate
        values (a pruned trial's value is its last, as Optuna's `tell` records it). Failed
        trials, and trials with no finite value, are left out."""
        if rec.status == FAILED or rec.value is None or not math.isfinite(rec.value):
            return
        if len(self.spec_metrics) > 1:
            # Optuna keeps no intermediate values, nor a value for a pruned trial, in a
            # multi-objective study: a stopped trial is PRUNED, a finished one its values.
            if rec.status == STOPPED or _finite(rec.metrics, self.spec_metrics):
                self.study.add_trial(optuna.trial.create_trial(
                    params={k: rec.config[k] for k in spec.space}, distributions=optuna_space(spec),
                    state=TrialState.PRUNED if rec.status == STOPPED else TrialState.COMPLETE,
                    values=None if rec.status == STOPPED else [rec.metrics[m] for m in self.spec_metrics]))
            return
        steps = {epoch: value for _, epoch, value, _ in rec.history if value is not None and math.isfinite(value)}
        self.study.add_trial(optuna.trial.create_trial(
            params={k: rec.config[k] for k in spec.space}, distributions=optuna_space(spec),
            state=TrialState.PRUNED if rec.status == STOPPED else TrialState.COMPLETE,
            value=rec.value, intermediate_values=steps,
        ))

    def suggest(self, trial_id: str) -> dict | None:
        if self.n_startup:
            trials = self.study.get_trials(deepcopy=False, states=(*_DONE, TrialState.RUNNING))
            done = sum(t.state in _DONE for t in trials)
            if done < self.n_startup <= len(trials):
                return None  # the start-up trials TPE asked for are running: wait for them
        if self.budget is not None:
            decision = self.budget.may_start(trial_id)
            if decision == WAIT:
                return None
            if decision == FINISHED:
                return Searcher.FINISHED
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        step = _epoch(result)
        value = result.get(self.spec_metrics[0])
        # A trial restarted from an older checkpoint reports its lost epochs again: Optuna keeps
        # the first value of a step (and warns about the second).
        if step is None or value is None or step <= self._last_step.get(trial_id, 0):
            return
        self._last_step[trial_id] = step
        super().on_trial_result(trial_id, {**result, "training_iteration": step})

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        step = None if result is None else _epoch(result)
        if not error and result is not None:
            # Tune skips the searcher's on_trial_result for the result its scheduler or stopper
            # stops a trial at (ASHA at a rung, and at max_epochs): that epoch comes only here.
            self.on_trial_result(trial_id, result)
        self._last_step.pop(trial_id, None)
        if self.budget is not None:
            self.budget.admitted.discard(trial_id)
        if not error and step is not None and step < self.max_epochs:
            # No value: Tune's searcher then tells Optuna PRUNED, and Optuna takes the last
            # intermediate value as the trial's.
            result = None
        elif not error and result is not None and not _finite(result, self.spec_metrics):
            # A finished trial without every objective (a multi-objective study refuses it
            # COMPLETE, and Tune's searcher would leave it RUNNING): FAIL.
            result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)


class FixedConfigs(Searcher):
    """These configurations, one trial each, in order (search.confirm's runs: confirm.py)."""

    def __init__(self, configs: list[dict[str, Any]]):
        super().__init__()
        self.configs = list(configs)

    def suggest(self, trial_id: str) -> dict | None:
        return self.configs.pop(0) if self.configs else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    # Tune saves its searcher with the experiment state (and warns when it cannot).
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.configs, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.configs = pickle.load(f)


def _finite(result: dict[str, Any], metrics: list[str]) -> bool:
    values = [result.get(m) for m in metrics]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _epoch(result: dict[str, Any]) -> int | None:
    step = result.get("epoch", result.get("training_iteration"))
    return None if step is None else int(step)
