"""The handful of MLflow operations raysweep needs: one parent run per search, one child run
per trial, all written by the driver.

Workers never talk to MLflow (docs/design.md, point 4): one writer keeps SQLite safe and the
cluster needs no credentials. The layout's names are in `names.py` (docs/design.md, "MLflow layout").
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from ..book import FAILED, RUNNING, TrialRecord
from ..cost import BILLED
from ..errors import SpecError
from ..failures import TRACKING, no_space
from ..redact import for_pickle, from_pickle, redact_text, spec_yaml
from ..spec import CONFIRM_KEY, Spec
from .models import log_task_model
from .names import (AUDITS_TAG, BEST_CONFIG_TAG, CONFIRMS_TAG, ERROR_TAG, EXPERIMENT_KIND, FAILURE_TAG, KIND_TAG, METRIC_TAG,
                    MODEL_SOURCE_TAG, ORPHANED_TAG, PARENT_TAG, TASK_TAG, TRAIN_SEED_TAG, TRIAL_ID_TAG,
                    trial_run_name)
from .schema import create_sqlite_store
from .spool import Spool, SpoolingClient
from .uri import refused

_MAX_PARAM = 6000  # MLflow's limit on a param value's length
_MAX_BATCH = 1000  # MLflow's limit on metrics (and entities) in one log_batch

Point = tuple[int, dict[str, float], int]  # (step, metrics, timestamp in ms): one epoch's report


def _params(values: dict[str, Any]) -> list[Param]:
    # A hyperparameter may be a path or URI (a task's data): logged with its credentials redacted.
    return [Param(str(k), redact_text(str(v))[:_MAX_PARAM]) for k, v in values.items()]


def _now_ms() -> int:
    return int(time.time() * 1000)


# A run the dead driver began for a trial Tune never saved: no trial of the resumed search.
ORPHANED_WHY = "the search's driver died before this trial was saved; it was not resumed"


@dataclass
class LeftRun:
    """A run a dead driver began for a trial Tune saved before it started (`reopen_search`)."""

    run_id: str
    logged: dict[str, float]  # its billed totals in MLflow
    last_step: int  # its last epoch in MLflow

    def take_up(self, rec: TrialRecord, orphaned: dict[str, float]) -> None:
        """`rec`'s trial started again: its run, ledger and logged epochs are this run's."""
        rec.run_id = self.run_id
        rec.rebase_bill(self.logged)
        rec.logged_epoch = max(rec.logged_epoch, self.last_step)
        for key, value in self.logged.items():  # billed by the trial now, not as an orphan's
            orphaned[key] = orphaned.get(key, 0.0) - value


@dataclass
class Reopened:
    """What `Tracker.reopen_search` found of a resumed search in MLflow."""

    params: set[str]  # the parent's param names
    orphaned: dict[str, float]  # the billed totals of runs no saved trial holds
    tags: dict[str, str]  # the parent's tags
    waiting: dict[str, LeftRun]  # by trial id: runs of trials Tune saved before they started


class Tracker:
    """The handful of MLflow operations raysweep needs, on one client.

    With a `spool`, writes that find MLflow unreachable wait on disk and are replayed when it
    answers (spool.py); the experiment itself must be reachable here.
    """

    def __init__(self, uri: str, experiment: str, spool: Spool | None = None):
        self.uri, self.spool = uri, spool
        create_sqlite_store(uri)  # a new SQLite file in ~10 ms, not MLflow's 2 s of migrations
        self.client = self._client()
        try:
            found = self.client.get_experiment_by_name(experiment)
        except MlflowException as exc:  # the first request: a 401, a server that is not MLflow's
            raise SpecError(refused(uri, exc)) from None
        if found is None:
            self.experiment_id = self.client.create_experiment(experiment, tags=EXPERIMENT_KIND)
        else:
            self.experiment_id = found.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if found.tags.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)

    def __getstate__(self):
        # Tune pickles callbacks with its experiment state (tuner.pkl, in the search's storage);
        # the client is rebuilt from the URI, which is pickled without its credentials.
        state = {k: v for k, v in self.__dict__.items() if k != "client"}
        return {**state, "uri": for_pickle(self.uri)}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.uri = from_pickle(self.uri)
        self.client = self._client()

    def _client(self) -> SpoolingClient:
        return SpoolingClient(MlflowClient(tracking_uri=self.uri), self.uri, getattr(self, "spool", None),
                              log_model=log_task_model)

    def finish(self) -> dict[str, str]:
        """Send what an outage left in the spool (warns with `raysweep sync` if MLflow is still
        down); the placeholder -> real run ids of runs created while it was down."""
        self.client.flush()
        return self.client.ids

    def start_search(self, spec: Spec) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=spec.name,
            tags={KIND_TAG: "search", TASK_TAG: spec.task, METRIC_TAG: spec.rank_metric},
        )
        run_id = run.info.run_id
        settings = {
            "task": spec.task, "metric": ",".join(m for m, _ in spec.objectives), "mode": ",".join(m for _, m in spec.objectives), "max_epochs": spec.max_epochs,
            "seed": spec.seed, "search.algorithm": spec.search.algorithm,
            "search.num_samples": spec.search.samples or "until the budget is spent",
            "scheduler.type": spec.scheduler.type, "workers_per_trial": spec.resources.workers_per_trial,
            **({} if spec.search.budget is None else
               {f"search.budget.{limit}": cap for limit, cap in spec.search.budget.limits.items()}),
        }
        self.client.log_batch(run_id, params=_params(settings))
        self.client.log_text(run_id, spec_yaml(spec), "spec.yaml")  # tracking.uri, data: paths redacted
        return run_id

    def start_trial(self, parent_run_id: str | None, rec: TrialRecord, params: dict[str, Any]) -> str:
        """A search's child run; with no parent, the run of a `raysweep train`."""
        if parent_run_id is None:
            name = "train " + trial_run_name(rec.number, rec.config).split(" ", 1)[-1]
            tags = {KIND_TAG: "train", TRIAL_ID_TAG: rec.trial_id}
        else:
            name = trial_run_name(rec.number, {k: v for k, v in rec.config.items() if k != CONFIRM_KEY})
            tags = {PARENT_TAG: parent_run_id, KIND_TAG: "trial", TRIAL_ID_TAG: rec.trial_id}
            if rec.retrain == "confirm":  # search.confirm: the trial it retrains, and with which seed
                tags.update({CONFIRMS_TAG: rec.confirms, TRAIN_SEED_TAG: rec.config[CONFIRM_KEY]["seed"]})
                name = f"{name} (confirm)"
            elif rec.retrain == "audit":  # scheduler.audit: the stopped trial it trains to the end
                tags[AUDITS_TAG] = rec.confirms
                name = f"{name} (audit)"
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        try:
            self.client.log_batch(run.info.run_id, params=_params(params))
        except MlflowException as exc:  # refused (not an outage: that is spooled): the run says why
            self.end_run(run.info.run_id, "FAILED", refused_tags(exc))
            raise
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.log_points(run_id, [(step, metrics, _now_ms())])

    def log_points(self, run_id: str, points: list[Point], tags: dict[str, Any] | None = None) -> None:
        """Several epochs' metrics (and tags) in as few `log_batch` calls as MLflow allows."""
        metrics = [Metric(k, v, ts, step) for step, values, ts in points for k, v in values.items()]
        run_tags = [RunTag(k, redact_text(str(v))) for k, v in (tags or {}).items()]  # an error may quote a URL
        while metrics or run_tags:  # tags (a handful) ride with the first batch
            room = _MAX_BATCH - len(run_tags)
            self.client.log_batch(run_id, metrics=metrics[:room], tags=run_tags)
            metrics, run_tags = metrics[room:], []

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.log_points(run_id, [], tags)

    def end_run(self, run_id: str, status: str = "FINISHED", tags: dict[str, Any] | None = None,
                points: list[Point] = ()) -> None:
        """End a run; `points` (epochs still buffered) and `tags` go first, in one write."""
        if tags or points:
            self.log_points(run_id, list(points), tags)
        self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.client.log_batch(run_id, params=_params(params))

    def log_best_params(self, run_id: str, params: dict[str, Any], logged: set[str]) -> None:
        """The best trial's hyperparameters as the search run's params, and as a tag.

        MLflow refuses to change a logged param: once an extended search (--resume --samples)
        finds a better trial, the tag holds the current best, the params the first. `logged`:
        the run's param names when this driver took it over (no read here: at the end of a
        search MLflow may be down, and this write must then go to the spool)."""
        self.log_params(run_id, {k: v for k, v in params.items() if k not in logged})
        self.set_tags(run_id, {BEST_CONFIG_TAG: json.dumps(params, default=str)[:_MAX_PARAM]})

    def reopen_search(self, parent_run_id: str, records: dict[str, TrialRecord], metric: str,
                      unfinished: Collection[str] = ()) -> Reopened:
        """Pick a resumed search's MLflow runs up again, and put right what its dead driver left.

        Each trial's run is found by its `raysweep.trial_id` tag (the saved book may predate
        it) and the last epoch it holds is read back, so no run is created twice and no epoch
        logged twice. Runs still RUNNING of trials that had ended get their status.

        A run of a trial the saved book does not know began after Tune's last save. Its trial
        may be `unfinished` in Tune's saved state (saved before it started): the run waits,
        RUNNING, for the trial to start again and take it up (`Reopened.waiting`). Any other is
        an orphan, a trial Tune never saved: tagged so, ended KILLED if it was running.

        Each trial's cost ledger continues from what MLflow last got (`TrialRecord.rebase_bill`).
        Orphans' and waiting runs' billed totals are `Reopened.orphaned` (their compute was
        spent; a waiting run's leaves it when its trial takes it up).
        """
        self.client.update_run(parent_run_id, status="RUNNING")
        parent = self.client.get_run(parent_run_id).data
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=50000,
        )
        reopened = Reopened(set(parent.params), {}, dict(parent.tags), {})
        for run in runs:
            trial_id = run.data.tags.get(TRIAL_ID_TAG, "")
            rec = records.get(trial_id)
            logged = {k: v for k, v in run.data.metrics.items() if k in BILLED}  # the latest values
            if rec is None:
                for key, value in logged.items():  # its compute was spent: still billed
                    reopened.orphaned[key] = reopened.orphaned.get(key, 0.0) + value
                if trial_id in unfinished and ORPHANED_TAG not in run.data.tags:
                    if run.info.status != "RUNNING":  # it ended, but its trial will run again
                        self.client.update_run(run.info.run_id, status="RUNNING")
                    reopened.waiting[trial_id] = LeftRun(run.info.run_id, logged, self._last_step(run.info.run_id, metric))
                elif run.info.status == "RUNNING":
                    self.end_run(run.info.run_id, "KILLED", {ORPHANED_TAG: ORPHANED_WHY})
                elif ORPHANED_TAG not in run.data.tags:  # it ended: its status and end time stay
                    self.set_tags(run.info.run_id, {ORPHANED_TAG: ORPHANED_WHY})
                continue
            if rec.run_id in (None, run.info.run_id):
                rec.rebase_bill(logged)
            rec.run_id = rec.run_id or run.info.run_id
            rec.logged_epoch = max(rec.logged_epoch, self._last_step(rec.run_id, metric))
            if rec.status != RUNNING and run.info.status == "RUNNING":
                self.end_run(rec.run_id, "FAILED" if rec.status == FAILED else "FINISHED")
            elif rec.status == RUNNING and run.info.status != "RUNNING":  # ended KILLED by a Ctrl-C
                self.client.update_run(rec.run_id, status="RUNNING")
        return reopened

    def _last_step(self, run_id: str, metric: str) -> int:
        return max([0, *(m.step for m in self.client.get_metric_history(run_id, metric))])

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def log_model(self, run_id: str, task: str, params: dict, state: dict, seed: int, **registry) -> str | None:
        """`models.log_task_model` of the spec's `task`; None while MLflow is unreachable."""
        return self.client.log_pytorch_model(run_id, task, params, state, seed, **registry)

    def registered_from(self, name: str, run_id: str, source: str) -> str | None:
        """The model URI of a version of registered model `name` that run `run_id` registered
        from `source` (its MODEL_SOURCE_TAG); None if none, or while MLflow is unreachable
        (the model is then logged again, spooled: a version too many, never one too few)."""
        try:
            versions = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        except Exception:  # noqa: BLE001 - MLflow down, or a store without a registry
            return None
        found = [v for v in versions if v.tags.get(MODEL_SOURCE_TAG) == source]
        return max(found, key=lambda v: int(v.version)).source if found else None

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, redact_text(text), artifact_file)  # a traceback may quote a URL


def refused_tags(exc: Exception) -> dict[str, str]:
    full = no_space(exc)  # SQLite's error quotes its SQL and parameters: not what a user needs
    why = f"the disk is full ({full})" if full is not None else " ".join(str(exc).split())[:1000]
    return {ERROR_TAG: f"MLflow refused a write: {why}", FAILURE_TAG: TRACKING}
