"""One thread that makes a search's per-trial MLflow writes, in the order they were asked for.

Tune takes trials' reports in one event loop, and a trial that has reported waits there for
the loop to hand it the next step. A write made in that loop (a synchronous SQLite
transaction, or a round trip to a team's tracking server) held up every trial's report behind
it. `MLflowCallback` hands its writes here instead; the loop goes on at once (with the best
model logged beside the summary's drawing, a search of 16 trials x 20 epochs logging to a
server 30 ms away took 10.20 s instead of 13.05 s: docs/design.md, point 41).

One thread, first in first out, so a trial's run is created before its metrics are written
and ended after them, exactly as when the loop made the writes itself; the writes still go
through the tracker's `SpoolingClient` (an outage is spooled as before). `drain()` waits until
everything handed over has been made: before a search's end reads the runs' ids, before an
interrupted search ends its runs KILLED. An exception in a write (`MLflowCallback` turns
MLflow's refusals into a failed trial itself) is raised once, in the caller's thread, at its
next `submit` or `drain`; writes handed over after it are skipped until then.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class Writer:
    """A daemon thread running the callables handed to it one at a time, in order."""

    def __init__(self, name: str = "raysweep-mlflow-writer"):
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    def submit(self, write: Callable[[], None]) -> None:
        """Hand `write` over; raises what an earlier write raised, if one did."""
        self._raise()
        self._start()
        self._queue.put((write, None))

    def drain(self) -> None:
        """Wait until every write handed over so far has been made (at once if none is
        waiting); raises what one of them raised."""
        if self._thread is not None:
            done = threading.Event()
            self._queue.put((None, done))
            done.wait()
        self._raise()

    def _start(self) -> None:
        # Started at the first write: a callback unpickled by a resumed search, or built for a
        # search that never starts a trial, holds no thread.
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            write, done = self._queue.get()
            try:
                if write is not None and self._error is None:
                    write()
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread (_raise)
                self._error = exc
            finally:
                if done is not None:
                    done.set()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
