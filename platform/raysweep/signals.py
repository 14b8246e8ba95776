"""How a Ctrl-C, SIGTERM or SIGHUP reaches a command's code: at once, except inside the writes it must
not cut in half; and which signal it was, for the exit code.

A second Ctrl-C during a search raises `KeyboardInterrupt` at once (interrupt.py). Raised
inside a write to a SQLite store, it rolled that write back (the epochs it carried were lost),
and in one run in a dozen or so under load the writes that then end the runs KILLED failed with
"database is locked": the command died with a traceback, exit 1, the runs left RUNNING
(`tests/test_interrupt.py::test_a_second_ctrl_c_exits_at_once`). Inside `uninterrupted()` the
`KeyboardInterrupt` waits until the block ends: a local write takes milliseconds. A call to an
MLflow server is not wrapped: it may wait on a timeout, and cut short it leaves nothing of this
process's half done. One exception: a search's parent run is made whole, its id in the book
before a stop is acted on (search.py), or the stop left it RUNNING.

Only Python's main thread runs signal handlers, so only its blocks defer anything. No heavy
imports: the command line reads `received()` for its exit code.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future

# The signals besides SIGINT that stop a run as a Ctrl-C does (interrupt.py) and stop `raysweep
# ui`'s server: SIGTERM (`ray job stop`, `docker stop`) and SIGHUP (the terminal closed).
STOPS = (signal.SIGTERM, signal.SIGHUP)

_depth = 0  # how many `uninterrupted()` blocks the main thread is in
_pending = False  # a KeyboardInterrupt waits for the outermost block's end
_received = signal.SIGINT  # the signal behind the last KeyboardInterrupt raised here
_requested = False  # a stop was asked for since `reset()`: raised, or waiting to be


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A block that a `KeyboardInterrupt` from `interrupt_now()` does not enter: it is raised as
    the outermost block ends."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            _pending = False
            raise KeyboardInterrupt


def interrupt_now(signum: int = signal.SIGINT) -> None:
    """From a signal handler: raise `KeyboardInterrupt` now, or as the `uninterrupted()` block
    the main thread is in ends; `signum` (SIGINT, or one of `STOPS` taken as one) is `received()`."""
    global _pending, _received, _requested
    _received, _requested = signum, True
    if _depth:
        _pending = True
        return
    raise KeyboardInterrupt


def received() -> int:
    """The signal behind the last `interrupt_now()`: SIGINT unless a SIGTERM or SIGHUP was taken as a Ctrl-C."""
    return _received


def reset() -> None:
    """A run begins: no stop asked for yet."""
    global _requested, _pending
    _requested = _pending = False


def raise_if_requested() -> None:
    """At a point where a stop is safe to act on: raise the `KeyboardInterrupt` a stop asked for.

    One raised where Python reports an exception and goes on (a weakref callback of the
    import system, a `__del__`) never reached the code: a SIGTERM 3 s into `raysweep train`
    was printed as "Exception ignored in ... _get_module_lock" and the command went on, waiting
    for good on the thread opening the MLflow store, itself stuck on an import lock."""
    if _requested and not _depth:
        raise KeyboardInterrupt


def wait_for(future: Future, poll_s: float = 0.2):
    """`future.result()`, acting on a stop asked for meanwhile (`raise_if_requested`)."""
    while True:
        try:
            return future.result(timeout=poll_s)
        except TimeoutError:
            raise_if_requested()
