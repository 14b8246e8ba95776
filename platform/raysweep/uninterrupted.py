"""Work that a second Ctrl-C must not cut in half: a call to a SQLite MLflow store.

A second Ctrl-C during a search raises `KeyboardInterrupt` at once (interrupt.py). Raised
inside a write to a SQLite store, it rolled that write back (the epochs it carried were lost),
and in one run in a dozen or so under load the writes that then end the runs KILLED failed with
"database is locked": the command died with a traceback, exit 1, the runs left RUNNING
(`tests/test_interrupt.py::test_a_second_ctrl_c_exits_at_once`). Inside `uninterrupted()` the
`KeyboardInterrupt` waits until the block ends: a local write takes milliseconds. A call to an
MLflow server is not wrapped: it may wait on a timeout, and cut short it leaves nothing of this
process's half done.

Only Python's main thread runs signal handlers, so only its blocks defer anything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_depth = 0  # how many `uninterrupted()` blocks the main thread is in
_pending = False  # a KeyboardInterrupt waits for the outermost block's end


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


def interrupt_now() -> None:
    """From a signal handler: raise `KeyboardInterrupt` now, or as the `uninterrupted()` block
    the main thread is in ends."""
    global _pending
    if _depth:
        _pending = True
        return
    raise KeyboardInterrupt
