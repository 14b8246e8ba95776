"""The driver process's surroundings: its working directory, and variables set for a while.

The working directory under `ray job submit --working-dir`:
There the directory is Ray's unpacked copy of the upload, and Ray unpacks it again (deletes
and recreates it, same path) whenever it starts a new worker process on that node. The driver
is then left in a deleted directory: `os.getcwd()` raises, in raysweep or in Tune. Entering
the same path again is enough: `working_dir()` does at the steps that need it, and in a Ray
job's driver `keep_working_dir()` makes every `os.getcwd()` (and so every `os.path.abspath` of
a relative path, as in Ray's own storage listings) do it when it would raise.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

_path: str | None = None
# Set by Ray's job supervisor in a job's driver process (ray._private.runtime_env.constants).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


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


def keep_working_dir(wait_s: float = 5.0) -> None:
    """In a Ray job's driver (a command's process, never on import): `os.getcwd()` that finds
    the working directory deleted enters it again, waiting up to `wait_s` for Ray to unpack it,
    instead of raising. Found by `raysweep submit --resume`: Ray's listing of the search's
    storage (`os.path.relpath`) raised FileNotFoundError out of os.getcwd() in the job."""
    if RAY_JOB_ENV not in os.environ or getattr(os.getcwd, "keeps_working_dir", False):
        return
    real = os.getcwd
    working_dir()

    def getcwd() -> str:
        try:
            return real()
        except FileNotFoundError:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    os.chdir(_path)
                    return real()
                except FileNotFoundError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    getcwd.keeps_working_dir = True
    os.getcwd = getcwd


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
