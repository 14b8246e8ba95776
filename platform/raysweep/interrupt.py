"""Ctrl-C is the user's "stop": an interrupted run, resumable, never a finished one.

Tune's `fit()` turns the first SIGINT into a graceful return: it stops the trial loop,
saves its experiment state (the trial book with it) and returns as if the search had
ended. It installs its handler when `fit()` starts and, on that first SIGINT, puts back
the handler it found, which is `Interrupt`'s: so after `fit()` returns, our handler being
installed again means Tune saw a Ctrl-C. A second Ctrl-C reaches our handler and raises
`KeyboardInterrupt` at once, as does a Ctrl-C before or after `fit()` (Ray starting, the
data loading, the test evaluation); during a call to a SQLite MLflow store, as the call
ends (signals.py).

SIGTERM (`ray job stop`, `docker stop`, a batch scheduler's pre-emption) and SIGHUP (the
terminal closed, an SSH session dropped) are taken as a Ctrl-C while a run is on, from before
Ray starts: they go to whichever SIGINT handler is installed, Tune's or ours. Ray's own driver
handler (`sys.exit`), which `ray.init` installs for SIGTERM, would end the search as a crash (no
state saved, a dump of Ray's signal handler on stderr), and SIGHUP's default ended the command
at once: its MLflow runs left RUNNING, two of Ray's agent processes orphaned. (The stop's own
lines to the hung-up terminal fail; the command's streams drop them: streams.py.)

Only a Ctrl-C escalates. A SIGTERM or SIGHUP once a stop is under way is ignored: such signals
come in pairs without anyone asking twice (a terminal's hang-up reaches a session leader from
the kernel and again from the shell; a batch scheduler may signal the job step and each of its
processes), and a second one, taken as "Ctrl-C again", ended the command at once in about one
closed terminal in three, with no summary and its runs left as they were. What wants the
command gone sends SIGKILL after its grace period (`docker stop`, Kubernetes, Slurm).

The record of it: `happened` (read by the trial book, which then leaves running trials
running, to be resumed, instead of settling them as stopped early), and `signum`.
"""

from __future__ import annotations

import signal
import sys
import threading

from ray.tune import Callback

from .signals import STOPS, interrupt_now, reset


class Interrupt(Callback):
    """Our SIGINT handler around a run, and Tune's callback that sees whether Tune used it."""

    # What the first Ctrl-C's line says the stop does: a search's state is saved for --resume;
    # `raysweep train` sets None (a stopped training run is run again from the start).
    saving: str | None = "saving the search's state"

    def __init__(self):
        self._previous = None
        self._previous_stops: dict[int, object] = {}  # SIGTERM's and SIGHUP's handlers before the block
        self._tune_handler = None  # the handler Tune installed for fit(), seen in setup()
        self._signalled = False
        self._stopping = False  # a stop (Ctrl-C, SIGTERM, SIGHUP) reached this run's handlers
        self.signum = signal.SIGINT  # the signal that stopped the run: SIGINT, or one of STOPS

    def __getstate__(self):  # Tune pickles its callbacks; handlers are this process's
        return {"_previous": None, "_previous_stops": {}, "_tune_handler": None, "_signalled": self._signalled,
                "_stopping": False, "signum": self.signum}

    def _handler(self, signum, frame):
        self._signalled = self._stopping = True
        interrupt_now(self.signum)  # at once, or as a write to a SQLite store ends (signals.py)

    def _terminated(self, signum, frame):
        if self._stopping:  # a repeat of the stop, not a person asking twice: see the module's docstring
            return
        self.signum = signum
        # Inside the block SIGINT's handler is always ours or Tune's (which puts ours back).
        signal.getsignal(signal.SIGINT)(signal.SIGINT, frame)

    def __enter__(self) -> Interrupt:
        reset()  # no stop asked for yet (a search before this one in the process may have been stopped)
        self._stopping = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            for signum in STOPS:
                previous = signal.signal(signum, self._terminated)  # None: a handler set outside Python
                self._previous_stops[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def take_sigterm_back(self, rays=None) -> None:
        """Inside the block, once Ray is up: SIGTERM's handler (and SIGHUP's) is ours again, at
        the C level too. Ray's core worker installs a C handler of its own that prints a dump of the signal, and
        Python's record of the handler does not show it. `rays`: the driver's handler `ray.init`
        would have installed (`ray_internals.sigterm_left_alone` kept it out), put in place as
        the block ends, as it would have been without the block."""
        if not self._previous_stops or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if rays is not None or current != self._terminated:
            at_end = rays if rays is not None else signal.SIG_DFL if current is None else current
            self._previous_stops[signal.SIGTERM] = at_end
        for signum in STOPS:  # SIGHUP too, in case a Ray installs one there
            signal.signal(signum, self._terminated)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        for signum, previous in self._previous_stops.items():
            signal.signal(signum, previous)
        self._previous_stops = {}

    def setup(self, **info):  # called inside fit(), after Tune installed its own handler
        if threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(signal.SIGINT)
        if handler == self._handler or not callable(handler):
            return
        self._tune_handler = handler

        def first_ctrl_c(signum, frame):  # said at once: the rest of the stop takes seconds
            self._stopping = True
            what = "stopping" if self.signum == signal.SIGINT else f"{signal.Signals(self.signum).name}: stopping"
            saving = f" ({self.saving})" if self.saving else ""
            print(f"raysweep: {what}{saving}; Ctrl-C again to exit at once", file=sys.stderr, flush=True)
            handler(signum, frame)  # Tune's: stop the loop, save, put our handler back

        signal.signal(signal.SIGINT, first_ctrl_c)

    @property
    def happened(self) -> bool:
        """A Ctrl-C reached Tune's handler (which put ours back) or ours."""
        if self._signalled:
            return True
        if self._tune_handler is None or threading.current_thread() is not threading.main_thread():
            return False
        return signal.getsignal(signal.SIGINT) == self._handler

    def after_fit(self) -> bool:
        """Whether fit() was interrupted; ours is the handler again either way (Tune leaves
        its own installed after a normal return, which would swallow the next Ctrl-C)."""
        happened = self.happened
        self._signalled = happened
        self._tune_handler = None
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._handler)
        return happened
