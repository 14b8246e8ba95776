"""The driver's record of every trial, kept as Tune reports it.

Results are collected as they arrive rather than read from Tune's final `Result`s
(docs/design.md, point 1: a Train trial's final `Result.metrics` can be None).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback

from .cost import BILLED, SEGMENT_KEY
from .ray_internals import stop_retrying
from .failures import NON_FINITE, TRACKING, read_trial_error
from .spec import CONFIRM_KEY, Spec, resume_fixed

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"


@dataclass
class TrialRecord:
    trial_id: str
    number: int
    config: dict[str, Any]
    status: str = RUNNING
    epochs: int = 0
    value: float | None = None  # the spec's metric at the last reported epoch
    metrics: dict[str, float] = field(default_factory=dict)  # last reported, all of them
    run_id: str | None = None
    checkpoint: Any = None  # ray.tune.Checkpoint of the last epoch saved
    error: str | None = None  # 'ExceptionType: message' of a failed trial
    failure: str | None = None  # its kind: failures.NON_FINITE, OOM or EXCEPTION
    traceback: str | None = None  # Tune's error file, every failure of the trial
    logged_epoch: int = 0  # the last epoch written to MLflow: a restarted trial repeats epochs
    # A run retraining this trial's configuration: with a fresh seed (search.confirm, confirm.py),
    # or to max_epochs after early stopping ended it (scheduler.audit, audit.py); `retrain` says which.
    confirms: str | None = None
    started_t: float | None = None  # seconds since the search began when the trial first started (views.py)
    # (seconds since the search began, epoch, metric value, cumulative device-hours), one per epoch
    history: list[tuple[float, int, float | None, float]] = field(default_factory=list)
    # The cost ledger (cost.py): the trial's earlier segments' totals, the current segment (the
    # process measuring it) and its last report. Plain defaults: a book pickled before these
    # existed still loads for --resume.
    billed_before: dict | None = None
    segment: int | None = None
    segment_last: dict | None = None

    def values_by_epoch(self) -> dict[int, float]:
        """The metric at each epoch it was reported with a value."""
        return {epoch: value for _, epoch, value, _ in self.history if value is not None}

    @property
    def retrain(self) -> str | None:
        """"confirm" or "audit" for a run retraining another trial's configuration, else None."""
        return None if self.confirms is None else self.config.get(CONFIRM_KEY, {}).get("kind", "confirm")

    def bill(self, result: dict[str, Any]) -> None:
        """Turn a report's per-segment cost figures into the trial's totals, in place (so MLflow,
        Tune's result.json and the summary all get the totals). A new segment (a restart, a
        --resume) adds to what the earlier ones were billed, repeated epochs included."""
        segment = result.pop(SEGMENT_KEY, None)
        if segment is None:  # a report without raysweep's meter (a plain Ray Train loop)
            return
        if segment != self.segment:
            self.billed_before = self.billed_total()
            self.segment = segment
        self.segment_last = {k: float(result[k]) for k in BILLED if k in result}
        result.update(self.billed_total())

    def billed_total(self) -> dict[str, float]:
        before, last = self.billed_before or {}, self.segment_last or {}
        return {k: before.get(k, 0.0) + last.get(k, 0.0) for k in BILLED if k in before or k in last}

    def rebase_bill(self, logged: dict[str, float]) -> None:
        """--resume: what MLflow holds may be newer than the book Tune last saved (reports
        between its last save and the driver's death); the next segment adds to the larger."""
        total = self.billed_total()
        self.billed_before = {k: max(total.get(k, 0.0), logged.get(k, 0.0)) for k in {*total, *logged}}
        self.segment, self.segment_last = None, None


def numeric_metrics(result: dict[str, Any], reserved: set[str]) -> dict[str, float]:
    """The task's own metrics in a Tune result (Tune's bookkeeping keys left out)."""
    return {
        k: float(v)
        for k, v in result.items()
        # numbers.Real: NumPy's numbers too, which a plain Ray Train loop may report
        if k not in reserved and isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def _tune_keys() -> set[str]:
    from ray.tune import result as r

    return set(r.AUTO_RESULT_KEYS) | set(r.DEFAULT_EXPERIMENT_INFO_KEYS) | set(r.DEBUG_METRICS) | {
        r.DONE, r.SHOULD_CHECKPOINT, "timesteps_since_restore",
    }


class TrialBook(Callback):
    def __init__(self, spec: Spec, storage: str | None = None):
        self.spec = spec
        self.storage = storage  # where Ray Train trials' checkpoint paths live (a URI or a directory)
        self._filesystem = None
        self.records: dict[str, TrialRecord] = {}
        self.parent_run_id: str | None = None  # the search's MLflow run, for `--resume`
        self.parent_params: set[str] = set()  # params that run already had when this driver took it over
        self.parent_tags: dict[str, str] = {}  # and its tags then
        # trials the search means to run, all rounds together; None: as many as its budget buys
        self.target = spec.search.samples
        self.cut_off: list[TrialRecord] = []  # running when the search stopped; now settled
        self.chosen: str | None = None  # search.confirm's choice (confirm.py), else the best by value
        self.front: list[str] = []  # several objectives: the Pareto front's trial ids when last logged (pareto.py)
        # Billed totals of runs a dead driver left that --resume could not continue (tracking.py).
        self.orphaned: dict[str, float] = {}
        # --resume: by trial id, runs the dead driver began for trials Tune saved before they
        # started; each trial takes its run up again as it starts (tracking.LeftRun).
        self.waiting: dict[str, Any] = {}
        self.interrupt = None  # interrupt.Interrupt of the run: after a Ctrl-C running trials stay running
        self.started = time.monotonic()
        self.started_at = time.time()  # the same moment on the wall clock: the views' timeline
        self._reserved = _tune_keys()
        self.settings = resume_fixed(spec)

    # -- Tune callback hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.records:  # restarted, or resumed by `--resume`
            self.records[trial.trial_id].status = RUNNING
        else:
            rec = TrialRecord(trial.trial_id, len(self.records) + 1, dict(trial.config))
            rec.confirms = rec.config.get(CONFIRM_KEY, {}).get("of")
            rec.started_t = time.monotonic() - self.started
            self.records[trial.trial_id] = rec

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self.records[trial.trial_id]
        rec.bill(result)  # before the other callbacks (MLflow's) see the result: it goes first
        rec.metrics = numeric_metrics(result, self._reserved)
        rec.epochs = int(rec.metrics.get("epoch", result.get("training_iteration", rec.epochs + 1)))
        if result.get("checkpoint_path"):  # a Ray Train trial's checkpoint, via TuneReportCallback
            from ray.tune import Checkpoint

            # The path comes without its filesystem (s3://, with its options): the storage's.
            rec.checkpoint = Checkpoint(result["checkpoint_path"], filesystem=self._storage_filesystem())
        value = rec.metrics.get(self.spec.rank_metric)
        rec.value = value if value is not None and math.isfinite(value) else None
        if not rec.history or rec.epochs > rec.history[-1][1]:  # a restart repeats epochs
            cost = rec.metrics.get("cost_device_hours", 0.0)
            rec.history.append((time.monotonic() - self.started, rec.epochs, rec.value, cost))

    # -- Tune saves this with its experiment state, so `--resume` finds every trial's MLflow
    # run, logged epochs and history (tune.Callback.get_state / set_state).
    def get_state(self) -> dict:
        return {"records": self.records, "parent_run_id": self.parent_run_id, "target": self.target,
                "chosen": self.chosen, "front": self.front,
                "elapsed": time.monotonic() - self.started,
                "settings": self.settings}  # what --resume may not change (spec.RESUME_FIXED)

    def set_state(self, state: dict) -> None:
        if self.records:
            # Tune restores callbacks from the same saved state `run_search` already loaded
            # and brought up to date with MLflow (logged epochs, run ids): keep that copy.
            return
        self.records = state["records"]
        self.parent_run_id = state["parent_run_id"]
        self.chosen = state.get("chosen")  # a book saved before search.confirm has none
        self.front = state.get("front", [])
        self.target = None if None in (self.target, state["target"]) else max(self.target, state["target"])
        self.started = time.monotonic() - state["elapsed"]  # learning-curve times run on
        self.started_at = time.time() - state["elapsed"]  # ... and the timeline's, without the pause

    def __getstate__(self):  # Tune pickles its callbacks: the filesystem handle doesn't travel
        # ... nor the spec's tracking credentials (tuner.pkl is in the search's storage).
        from .redact import scrubbed_spec

        return {**self.__dict__, "_filesystem": None, "interrupt": None, "spec": scrubbed_spec(self.spec)}

    def _storage_filesystem(self):
        if self._filesystem is None and self.storage and "://" in self.storage:
            import pyarrow.fs

            self._filesystem = pyarrow.fs.FileSystem.from_uri(self.storage)[0]
        return self._filesystem

    def on_trial_complete(self, iteration, trials, trial, **info):
        rec = self.records[trial.trial_id]
        self._settle(rec)
        rec.checkpoint = trial.checkpoint or rec.checkpoint

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # Each saved checkpoint as Tune registers it: a trial the search stops (a budget spent,
        # search.max_failed_trials) gets no on_trial_complete, and without this its earlier
        # checkpoints were unknown here: chosen best, it got no test metrics and no model.
        if trial.trial_id in self.records:
            self.records[trial.trial_id].checkpoint = checkpoint

    def _settle(self, rec: TrialRecord) -> None:
        if rec.failure == TRACKING:  # failed by MLflow refusing its writes; stopped for it
            return
        # A trial that ends before max_epochs without an error was stopped early (by ASHA, or
        # by the search stopping).
        rec.status = FINISHED if rec.epochs >= self.spec.max_epochs else STOPPED

    def on_trial_error(self, iteration, trials, trial, **info):
        rec = self.records[trial.trial_id]
        error = read_trial_error(trial)
        rec.status, rec.error, rec.failure, rec.traceback = FAILED, error.line, error.kind, error.traceback

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A diverged trial gets no more retries (failures.max_failures).

        Tune decides on a retry before any callback sees the error, so the retry already
        queued still runs: it resumes from the last checkpoint and, diverging again, ends
        the trial FAILED. `max_failures` is the attribute Tune's retry check reads.
        """
        if read_trial_error(trial).kind == NON_FINITE:
            stop_retrying(trial)

    def on_experiment_end(self, trials, **info):
        # Ctrl-C: Tune saved the running trials to be resumed (--resume); they are not stopped early.
        if self.interrupted:
            return
        # Trials still running when the search stopped early (search.max_failed_trials):
        # Tune stops them without an on_trial_complete.
        self.cut_off = [rec for rec in self.records.values() if rec.status == RUNNING]
        for rec in self.cut_off:
            self._settle(rec)
        for trial in trials:  # their last checkpoint Tune registered, if on_checkpoint missed it
            rec = self.records.get(trial.trial_id)
            if rec is not None and rec.checkpoint is None:
                rec.checkpoint = getattr(trial, "checkpoint", None)

    # -- queries
    @property
    def interrupted(self) -> bool:
        """A Ctrl-C stopped the run: its running trials stay running, saved for --resume."""
        return self.interrupt is not None and self.interrupt.happened

    def counts(self) -> dict[str, int]:
        out = {RUNNING: 0, FINISHED: 0, STOPPED: 0, FAILED: 0}
        for rec in self.records.values():
            out[rec.status] += 1
        return out

    def ranked(self) -> list[TrialRecord]:
        """Trials with a value, best first."""
        scored = [r for r in self.records.values() if r.value is not None and r.status != FAILED]
        return sorted(scored, key=lambda r: r.value if self.spec.rank_mode == "min" else -r.value)

    def searched(self) -> dict[str, TrialRecord]:
        """Each configuration the search tried, once, as a later round's sampler and ASHA rungs
        should see it (`--resume --samples +N`).

        A confirming run (search.confirm: a top configuration with a fresh seed) is left out: its
        configuration is there already, and counting it again would pull TPE towards the
        confirmed ones and raise ASHA's cut-offs with their values twice. An audited trial
        (stopped, then trained to max_epochs by scheduler.audit with its own seed, replaying its
        epochs) is its audit run when that finished: the same epochs and the ones after, so
        the sampler learns how the configuration ended rather than where ASHA stopped it."""
        out = {tid: rec for tid, rec in self.records.items() if rec.retrain is None}
        for rec in self.records.values():
            if rec.retrain == "audit" and rec.status == FINISHED and rec.confirms in out:
                out[rec.confirms] = rec
        return out

    def best(self) -> TrialRecord | None:
        """The best trial by its metric among those with a checkpoint (a model to test and log),
        or by its metric alone when none has one; with search.confirm, the run confirmation chose.

        A trial the search stopped while its first checkpoint was being saved (Tune drops the
        save) has a value and nothing to load: the best that does is the one a user can use
        (`pareto.choose` does the same among the front's members). scheduler.audit's runs are
        never the best: the audit reports on early stopping, it does not pick (audit.py)."""
        if self.chosen is not None and self.chosen in self.records:
            return self.records[self.chosen]
        ranked = [r for r in self.ranked() if r.retrain != "audit"]
        saved = [r for r in ranked if r.checkpoint is not None]
        return (saved or ranked or [None])[0]

    @property
    def epochs_run(self) -> int:
        return sum(r.epochs for r in self.records.values())
