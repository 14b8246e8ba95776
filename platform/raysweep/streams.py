"""A command's output outlives its reader: a run goes on when nobody reads what it prints.

`raysweep search ... | head`, a pager quit early, a terminal closed (SSH dropped): the next
write to standard output fails (BrokenPipeError; EIO on a hung-up terminal). Raised from the
progress line, it ended a search with exit 1, its parent run KILLED, no summary, no model, and
not a word said (stderr went the same way). A run's output is a view of what MLflow, the storage
and `--summary-json` record, so losing its reader must not lose the run: the stream that failed
goes to /dev/null from then on, and the run goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator

# A reader gone: a pipe's (EPIPE) or a hung-up terminal's (EIO).
_GONE = (errno.EPIPE, errno.EIO)


def _to_devnull(fd: int) -> None:
    """Point file descriptor `fd` at /dev/null: what is written there is dropped."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class Unread:
    """A text stream whose writes and flushes, once its reader is gone, are dropped, not raised."""

    def __init__(self, stream):
        self._stream = stream

    def _dropped(self, exc: OSError) -> None:
        if exc.errno not in _GONE:
            raise exc
        # From now on the stream writes to /dev/null; one with no descriptor (a test's capture)
        # keeps failing, each write dropped here.
        with contextlib.suppress(OSError, ValueError):
            _to_devnull(self._stream.fileno())

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._dropped(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._dropped(exc)
            with contextlib.suppress(OSError):  # what was buffered, now to /dev/null
                self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def outliving_readers() -> Iterator[None]:
    """While a command runs: `sys.stdout` and `sys.stderr` are `Unread`; as they were after."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Unread(sys.stdout), Unread(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
