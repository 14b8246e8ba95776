"""The Tune callback that mirrors the driver's `TrialBook` into MLflow as trials report."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from typing import Any

from mlflow.exceptions import MlflowException
from ray.tune import Callback

from ..book import FAILED, RUNNING, STOPPED, TrialBook, TrialRecord
from ..cost import BILLED
from ..failures import TRACKING
from ..redact import scrubbed_spec
from ..spec import Spec
from .names import ERROR_TAG, FAILURE_TAG, ORPHANED_TAG, STOPPED_EARLY_TAG
from .tracker import Point, Tracker, _now_ms, refused_tags
from .writer import Writer

# A run a dead driver began for a trial Tune saved before it started, which --resume's search
# ended before starting again (a budget spent, too many failures): no trial of the search.
NOT_STARTED_AGAIN = "the search's driver died after this trial began; --resume's search ended before it started again"

# A trial's epoch metrics are written at most this often (the rest wait in the driver): each
# write is a synchronous SQLite transaction (~20 ms) or a round trip to a server, made in the
# callback's writer thread (writer.py). See MLflowCallback.
FLUSH_INTERVAL_S = 1.0


def _newest_step(rec: TrialRecord, buffered: list[Point]) -> int:
    """The last epoch the trial's run holds in MLflow or will once `buffered` is written (a
    report at or below it repeats an epoch: rec.epochs is never above it then)."""
    return max(rec.logged_epoch, buffered[-1][0] if buffered else 0)


class MLflowCallback(Callback):
    """Mirrors the `TrialBook` into MLflow as Tune reports; runs after the book in the list.

    A trial's epochs are written at most once per `FLUSH_INTERVAL_S` (the first at once, the
    rest buffered here, each point with the time it arrived); the buffer is written when the
    trial ends, fails or is cut off, and when the search ends or is interrupted (`flush`, from
    run_search). Every write is made by the callback's `Writer` thread, in the order Tune's
    events came, so Tune's loop never waits for MLflow; all still go through the tracker's
    `SpoolingClient`: during an outage buffered points are spooled like any other write.

    A point leaves the buffer once the writer has written it (sent or spooled), and only then
    does `TrialRecord.logged_epoch` count it: `--resume` must not take a point lost with a dead
    driver's buffer for one MLflow holds. A trial's run id and its refusal by MLflow (`_guard`)
    are likewise set by the writer; what the loop decides from them is decided again there.
    The buffer is saved with Tune's experiment state (`get_state`) and written when a
    resumed search restores it (`set_state`); epochs reported after Tune's last save are
    reported again by the resumed trials, which restart from a checkpoint of that save or
    older. So a dead driver loses no point, and no epoch gets two. (Flushing only at each save
    would hold points back for Tune's saves, a second or more apart: docs/design.md, point 35.)
    """

    def __init__(self, tracker: Tracker, book: TrialBook, parent_run_id: str | None, spec: Spec, params_of):
        self.tracker, self.book, self.parent_run_id, self.spec = tracker, book, parent_run_id, spec
        self._params_of = params_of
        self._buffer: dict[str, list[Point]] = {}  # trial id -> epochs not yet written
        self._written: dict[str, float] = {}  # trial id -> time.monotonic() of its last write
        self._unbilled: set[str] = set()  # trials whose cost grew on epochs MLflow already holds
        self._lock = threading.Lock()  # the buffer: the loop appends, the writer takes written points
        self._writer = Writer()

    def __getstate__(self):
        # Tune pickles its callbacks (tuner.pkl, in the search's storage). A buffer and a
        # thread are this driver's alone; the spec goes without its tracking credentials, and
        # `params_of` (a closure over the spec as given) not at all: unpickled, it is the spec's
        # trial params.
        return {**self.__dict__, "_buffer": {}, "_written": {}, "_unbilled": set(), "spec": scrubbed_spec(self.spec),
                "_params_of": None, "_lock": None, "_writer": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._writer = threading.Lock(), Writer()
        if self._params_of is None:
            from ..trial import trial_params

            self._params_of = functools.partial(trial_params, self.spec)

    @contextlib.contextmanager
    def _guard(self, rec: TrialRecord):
        """A write MLflow refuses (a name it rejects, SQLite locked, a full disk) fails this
        trial only: its run ends FAILED saying why, the book marks it failed (the search's
        stopper ends it), and nothing more is written for it. Outages never get here: the
        client spools them."""
        try:
            yield
        except MlflowException as exc:
            rec.status, rec.failure = FAILED, TRACKING
            rec.error = refused_tags(exc)[ERROR_TAG]
            with self._lock:
                self._buffer.pop(rec.trial_id, None)
            if rec.run_id is not None:
                with contextlib.suppress(MlflowException):  # the same refusal may stop this write too
                    self.tracker.end_run(rec.run_id, "FAILED", refused_tags(exc))

    def on_trial_start(self, iteration, trials, trial, **info):
        rec = self.book.records[trial.trial_id]
        left = self.book.waiting.pop(trial.trial_id, None)
        if rec.run_id is None and left is not None:  # --resume: the run its dead driver began
            left.take_up(rec, self.book.orphaned)
            return
        self._writer.submit(functools.partial(self._create_run, rec))

    def _create_run(self, rec: TrialRecord) -> None:
        """In the writer: the trial's run, unless it has one (a trial started again before its
        run existed) or MLflow refused it."""
        if rec.run_id is None and rec.failure != TRACKING:
            with self._guard(rec):
                rec.run_id = self.tracker.start_trial(self.parent_run_id, rec, self._params_of(rec.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self.book.records[trial.trial_id]
        if rec.failure == TRACKING:
            return
        with self._lock:
            buffered = self._buffer.setdefault(rec.trial_id, [])
            # A trial restarted from an older checkpoint reports its lost epochs again: MLflow
            # keeps the first report of each epoch, so every metric has one point per epoch.
            # Its cost totals did grow (repeated epochs are paid for): MLflow gets them with its
            # next new epoch, or when it ends on a repeated one (_end).
            if rec.epochs <= _newest_step(rec, buffered):
                self._unbilled.add(rec.trial_id)
                return
            self._unbilled.discard(rec.trial_id)
            buffered.append((rec.epochs, dict(rec.metrics), _now_ms()))
        if time.monotonic() - self._written.get(rec.trial_id, -math.inf) >= FLUSH_INTERVAL_S:
            self._written[rec.trial_id] = time.monotonic()
            self._writer.submit(functools.partial(self._write, rec))

    def _write(self, rec: TrialRecord) -> None:
        """In the writer: the trial's buffered points, if its run can take them."""
        if rec.failure == TRACKING or rec.run_id is None:
            return
        with self._lock:
            points = list(self._buffer.get(rec.trial_id, ()))
        if points:
            with self._guard(rec):
                self.tracker.log_points(rec.run_id, points)
                self._written_up_to(rec, points)

    def _written_up_to(self, rec: TrialRecord, points: list[Point]) -> None:
        """`points` (the buffer's first ones) are in MLflow (or its spool): out of the buffer."""
        with self._lock:
            buffered = self._buffer.get(rec.trial_id)
            if buffered is not None:
                del buffered[:len(points)]
        rec.logged_epoch = max(rec.logged_epoch, points[-1][0])

    def flush(self) -> None:
        """Write every buffered epoch now and wait until every write handed to the writer is
        made (the search ends or is interrupted)."""
        with self._lock:
            trial_ids = [trial_id for trial_id, points in self._buffer.items() if points]
        for trial_id in trial_ids:
            rec = self.book.records.get(trial_id)
            if rec is not None:
                self._writer.submit(functools.partial(self._write, rec))
        self.drain()

    def drain(self) -> None:
        """Wait until every write handed to the writer so far is made; buffered points stay."""
        self._writer.drain()

    def get_state(self) -> dict | None:
        # Points the writer has been handed but not yet written are still in the buffer.
        with self._lock:
            buffered = {trial_id: list(points) for trial_id, points in self._buffer.items() if points}
        return {"buffer": buffered} if buffered else None

    def set_state(self, state: dict) -> None:
        """A resumed search: write what the dead driver had buffered at Tune's last save.

        Called after the book's set_state; run_search has already set each record's
        logged_epoch from the MLflow history (`Tracker.reopen_search`), so nothing is logged twice.

        A trial whose run the dead driver's writer had not yet created (the book was saved
        with no run id, and MLflow holds no run of it) keeps its points here: a trial Tune runs
        again creates its run as it starts and writes them first; one that had ended gets its
        run now, its points, and its end; one the search ends before it runs again, as it ends
        (`_end`).
        """
        for trial_id, points in state.get("buffer", {}).items():
            rec = self.book.records.get(trial_id)
            if rec is None:
                continue
            points = [p for p in points if p[0] > rec.logged_epoch]
            if not points:
                continue
            with self._lock:
                self._buffer[trial_id] = points
            if rec.run_id is not None:
                self._writer.submit(functools.partial(self._write, rec))
            elif rec.status != RUNNING:  # its run before its traceback: _end would create it after
                self._writer.submit(functools.partial(self._create_run, rec))
                self._end_ended(rec)
        self.drain()

    def _end(self, rec: TrialRecord, status: str, tags: dict[str, Any]) -> None:
        self._written.pop(rec.trial_id, None)
        extra: list[Point] = []
        if rec.trial_id in self._unbilled:
            # Its last report repeated an epoch MLflow holds (a restart from an older
            # checkpoint, or a resumed trial saying its last epoch again): that epoch's step gets
            # the ledger's totals once more, later, so they are the run's latest values.
            self._unbilled.discard(rec.trial_id)
            billed = {k: v for k, v in rec.metrics.items() if k in BILLED}
            if billed:
                with self._lock:
                    extra = [(_newest_step(rec, self._buffer.get(rec.trial_id, [])), billed, _now_ms())]

        def end() -> None:
            with self._lock:
                points = list(self._buffer.get(rec.trial_id, ()))
            if points:  # --resume: a trial whose run its dead driver never created has one now
                self._create_run(rec)
            if rec.run_id is None or rec.failure == TRACKING:  # its run already ended, saying why
                return
            with self._guard(rec):
                self.tracker.end_run(rec.run_id, status, tags, points=[*points, *extra])  # points and tags: one write
                if points:
                    self._written_up_to(rec, points)
                with self._lock:
                    if not self._buffer.get(rec.trial_id, True):
                        del self._buffer[rec.trial_id]
        self._writer.submit(end)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end_finished(self.book.records[trial.trial_id])

    def _end_finished(self, rec: TrialRecord) -> None:
        self._end(rec, "FINISHED", {STOPPED_EARLY_TAG: "true"} if rec.status == STOPPED else {})

    def on_trial_error(self, iteration, trials, trial, **info):
        rec = self.book.records[trial.trial_id]
        if rec.status == FAILED and rec.failure != TRACKING:
            self._end_ended(rec)

    def _end_ended(self, rec: TrialRecord) -> None:
        """The run of a trial the book has settled: FINISHED (stopped early: tagged), or FAILED
        with its error and traceback."""
        if rec.status != FAILED:
            self._end_finished(rec)
            return
        if rec.traceback:
            def traceback(text: str = rec.traceback) -> None:
                if rec.run_id is not None and rec.failure != TRACKING:
                    with self._guard(rec):
                        self.tracker.log_text(rec.run_id, text, "error/traceback.txt")
            self._writer.submit(traceback)
        self._end(rec, "FAILED", {ERROR_TAG: rec.error or "trial failed", FAILURE_TAG: rec.failure or "exception"})

    def on_experiment_end(self, trials, **info):
        for rec in self.book.cut_off:  # settled by the book, which runs first
            self._end_finished(rec)
        if not self.book.interrupted:
            # --resume: runs of this round's trials that never started again (the search
            # stopped first) are no trials of it. After a Ctrl-C they still wait (end_running_killed).
            for trial in trials:
                left = self.book.waiting.pop(trial.trial_id, None)
                if left is not None:
                    self._writer.submit(functools.partial(self._end_orphan, left.run_id))
        self.flush()

    def _end_orphan(self, run_id: str) -> None:
        with contextlib.suppress(MlflowException):  # refused: its run stays as it was
            self.tracker.end_run(run_id, "KILLED", {ORPHANED_TAG: NOT_STARTED_AGAIN})
