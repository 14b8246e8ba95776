"""Concise progress for a search: one status line instead of Ray's trial tables.

On a terminal the line updates in place; elsewhere (CI logs, `ray job logs`) a line is
printed when a trial ends, at most every few seconds, so logs stay readable.
"""

from __future__ import annotations

import time

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .book import FAILED, FINISHED, RUNNING, STOPPED, TrialBook
from .budget import Budget
from .console import make_console

_PLAIN_INTERVAL_S = 5.0
SLOW_POLL_EPOCHS = 3  # epochs in a row shorter than Ray Train's poll before SlowPollWarning speaks
QUIET_TRIAL_S = 600.0  # a running trial silent this long is named (QuietTrialWarning)


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _param(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def failure_line(rec) -> str:
    """What a failed trial's line says: the error in one line, and where its traceback is."""
    where = "; traceback: error/traceback.txt in its MLflow run" if rec.run_id else ""
    return f"trial {rec.number:03d} failed after {rec.epochs} epoch{'' if rec.epochs == 1 else 's'}: {rec.error}{where}"


class _Printing(Callback):
    """A callback that prints: Tune pickles its callbacks with the experiment state, and a
    console doesn't travel (a restored search gets a fresh one)."""

    def __init__(self, console: Console | None = None):
        self.console = console or make_console()

    def __getstate__(self):
        return {**self.__dict__, "console": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.console = self.console or make_console()


class ProgressCallback(_Printing):
    """The status line; with a `budget` (search.budget), what is spent of it, and once the first
    epochs are measured, one line of what the rest of it buys (`Budget.estimate`)."""

    def __init__(self, book: TrialBook, console: Console | None = None, budget: Budget | None = None):
        super().__init__(console)
        self.book, self.budget = book, budget
        self.estimated = False
        self._live: Live | None = None
        self._last_plain = 0.0
        self._last_line = ""

    def __getstate__(self):
        return {**super().__getstate__(), "_live": None}  # nor does a live display

    def line(self) -> str:
        c = self.book.counts()
        best = self.book.best()
        metric = self.book.spec.rank_metric
        done = c[FINISHED] + c[STOPPED] + c[FAILED]
        elapsed = time.monotonic() - self.book.started
        spent = "" if self.budget is None else f" · budget {self.budget.used_fraction():.0%} spent"
        return (
            f"trials {done}{'' if self.book.target is None else f'/{self.book.target}'} done · {c[RUNNING]} running · "
            f"{c[STOPPED]} stopped early · {c[FAILED]} failed · best {metric} "
            f"{_value(best.value if best else None)}{spent} · {elapsed:.0f}s"
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.budget is None or self.estimated:
            return
        estimate = self.budget.estimate()
        if estimate is not None:  # on a terminal rich prints it above the live status line
            self.estimated = True
            self.console.print(estimate, highlight=False)

    def _show(self, force: bool = False) -> None:
        line = self.line()
        if self.console.is_terminal:
            if self._live is None:
                self._live = Live(Text(line), console=self.console, refresh_per_second=4, transient=False)
                self._live.start()
            self._live.update(Text(line))
            return
        now = time.monotonic()
        changed = line.split(" · ")[:-1] != self._last_line.split(" · ")[:-1]
        if changed and (force or now - self._last_plain >= _PLAIN_INTERVAL_S):  # force: now, if new
            self.console.print(line, highlight=False)
            self._last_plain, self._last_line = now, line

    def on_step_end(self, iteration, trials, **info):
        if self.console.is_terminal:
            self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._show()

    def on_trial_error(self, iteration, trials, trial, **info):
        rec = self.book.records.get(trial.trial_id)  # the book, callback 0, has read the error
        if rec is not None and rec.error:
            # markup=False: an error's text may hold [brackets] that rich would eat; soft_wrap:
            # one line however long, as grep and a log reader expect.
            self.console.print(failure_line(rec), highlight=False, markup=False, soft_wrap=True)
        self._show()

    def on_experiment_end(self, trials, **info):
        self._show(force=not self.console.is_terminal)
        if self._live is not None:
            self._live.stop()
            self._live = None


class RunProgress(_Printing):
    """One line per epoch for a single run (`raysweep train`): its epochs are the progress."""

    def __init__(self, book: TrialBook, console: Console | None = None):
        super().__init__(console)
        self.book = book

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self.book.records[trial.trial_id]
        shown = " · ".join(
            f"{k} {_value(v)}" for k, v in rec.metrics.items() if k.startswith(("val_", "train_loss"))
        )
        elapsed = time.monotonic() - self.book.started
        self.console.print(f"epoch {rec.epochs}/{self.book.spec.max_epochs} · {shown} · {elapsed:.0f}s", highlight=False)


class SlowPollWarning(_Printing):
    """Says once when a worker group's epochs are shorter than Ray Train's poll interval.

    Ray Train's controller takes one report per poll and a worker's next report waits for it,
    so such a trial trains at one epoch per poll (distributed.py). Told from the driver, which
    sees every trial's `epoch_time_s` (worker output reaches it only with --verbose).
    """

    def __init__(self, poll_s: float, console: Console | None = None):
        super().__init__(console)
        self.poll_s = poll_s
        self.said = False
        self._short: dict[str, int] = {}  # per trial: epochs in a row shorter than the poll

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch_s = result.get("epoch_time_s")
        if self.said or not isinstance(epoch_s, (int, float)):
            return
        short = self._short.get(trial.trial_id, 0) + 1 if epoch_s < self.poll_s else 0
        self._short[trial.trial_id] = short
        if short >= SLOW_POLL_EPOCHS:
            self.said = True
            self.console.print(
                f"warning: epochs take {epoch_s:.3g} s, less than Ray Train's poll interval ({self.poll_s:g} s, "
                "resources.poll_interval_s): each waits for the next poll; set it below the epoch time",
                highlight=False, soft_wrap=True,
            )


class QuietTrialWarning(_Printing):
    """Says when a running trial has reported no epoch for `quiet_s`, or 20 of its longest
    epochs if longer: once per silence, naming the trial.

    Tune has no timeout for a trial: one that hangs (a deadlocked DataLoader, a collective
    waiting on a dead peer, a stuck network mount) holds its search for good, and the status
    line only goes on counting seconds. The trial is told, not stopped: its epoch may just be
    long (a first epoch on a large dataset)."""

    def __init__(self, book: TrialBook, quiet_s: float = QUIET_TRIAL_S, console: Console | None = None,
                 clock=time.monotonic):
        super().__init__(console)
        self.book, self.quiet_s, self.clock = book, quiet_s, clock
        self._heard: dict[str, float] = {}  # per running trial: when it started or last reported
        self._longest: dict[str, float] = {}  # its longest epoch_time_s
        self._said: set[str] = set()  # told for the silence it is in

    def __getstate__(self):  # times are this process's clock's: a restored search starts afresh
        return {**super().__getstate__(), "_heard": {}, "_said": set(), "clock": None}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.clock = time.monotonic

    def _heard_now(self, trial) -> None:
        self._heard[trial.trial_id] = self.clock()
        self._said.discard(trial.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._heard_now(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._heard_now(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch_s = result.get("epoch_time_s")
        if isinstance(epoch_s, (int, float)):
            self._longest[trial.trial_id] = max(epoch_s, self._longest.get(trial.trial_id, 0.0))
        self._heard_now(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._heard.pop(trial.trial_id, None)

    on_trial_error = on_trial_complete

    def on_step_end(self, iteration, trials, **info):
        now = self.clock()
        for trial in trials:
            heard = self._heard.get(trial.trial_id)
            if heard is None or trial.trial_id in self._said or trial.status != "RUNNING":
                continue
            longest = self._longest.get(trial.trial_id)
            silent = now - heard
            if silent >= max(self.quiet_s, 20 * (longest or 0.0)):
                self._said.add(trial.trial_id)
                epochs = f"its longest epoch took {longest:.3g} s" if longest else "it has reported no epoch yet"
                rec = self.book.records.get(trial.trial_id)
                name = f"{rec.number:03d}" if rec is not None else trial.trial_id
                self.console.print(
                    f"warning: trial {name} has reported nothing for "
                    f"{f'{silent / 60:.0f} min' if silent >= 60 else f'{silent:.0f} s'} ({epochs}): "
                    "if it hangs, Ctrl-C stops the run; a search's --resume continues that trial from its last "
                    "checkpoint", highlight=False, soft_wrap=True)


def leaderboard(book: TrialBook, top: int = 5) -> Table:
    """The top trials: value, epochs, status and their sampled hyperparameters."""
    spec = book.spec
    ranked = book.ranked()  # failed trials have no place in it
    table = Table(title=f"top {min(top, len(ranked))} of {len(book.records)} trials by {spec.rank_metric} ({spec.rank_mode})", title_justify="left")
    others = [m for m, _ in spec.objectives[1:]]  # several objectives: the later ones beside the first
    for col in ("#", "trial", spec.rank_metric, *others, "epochs", "status", *spec.space):
        table.add_column(col, justify="right" if col not in ("trial", "status") else "left")
    for rank, rec in enumerate(ranked[:top], start=1):
        params = [_param(rec.config.get(k)) for k in spec.space]
        status = rec.status if rec.retrain is None else f"{rec.status} ({rec.retrain})"  # confirm.py, audit.py
        table.add_row(str(rank), f"{rec.number:03d}", _value(rec.value), *(_value(rec.metrics.get(m)) for m in others),
                      str(rec.epochs), status, *params)
    return table
