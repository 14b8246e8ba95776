"""The driver process's surroundings: its working directory, and variables set for a while.

The working directory under `ray job submit --working-dir`:
There the directory is Ray's unpacked copy of the upload, and Ray unpacks it again (deletes
and recreates it, same path) whenever it starts a new worker process on that node. The driver
is then left in a deleted directory: `os.getcwd()` raises, in raysweep or in Tune. Entering
the same path again is enough.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

_path: str | None = None


def working_dir() -> str:
    """The directory the process started in, entered again if it was recreated under it."""
    global _path
    try:
        current = os.getcwd()
    except FileNotFoundError:
        current = None
    if _path is None:
        _path = current or os.environ.get("PWD") or "/"
    if current != _path:
        try:
            os.chdir(_path)
        except OSError:  # being unpacked right now: the next call tries again
            pass
    return _path


@contextlib.contextmanager
def scoped_env(values: dict[str, str], *, override: bool = True) -> Iterator[None]:
    """These variables in this process's environment while the block runs, then as they were (a
    notebook's next Tune run, or a reused Tune trial process, must not inherit them).
    `override=False`: a variable already set keeps its value (one the user exported wins)."""
    before = {name: os.environ.get(name) for name in values if override or name not in os.environ}
    os.environ.update({name: values[name] for name in before})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
