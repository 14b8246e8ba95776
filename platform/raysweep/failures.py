"""What ends a trial FAILED, and how the driver describes it.

A trial fails when its task raises. The driver tells three kinds apart (MLflow tag
`raysweep.failure`): `non_finite` (`NonFiniteLoss`: a loss or the spec's metric became NaN or
infinite), `oom` (CUDA out of memory) and `exception` (anything else); a killed trial process
gets a hint in its line. `no_space` tells a full disk under any wrapping, for the spool (a
SQLite store's full disk is an outage) and the search's one-line errors.

Nothing here imports torch or Ray: the context raises `NonFiniteLoss` inside workers, the
driver's `TrialBook` reads errors back.
"""

from __future__ import annotations

import contextlib
import errno
import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import DataError, NonFiniteLoss

NON_FINITE, OOM, EXCEPTION = "non_finite", "oom", "exception"
TRACKING = "tracking"  # MLflow refused a write for the trial's run (tracking.MLflowCallback)

OOM_HINT = "out of GPU memory: reduce batch_size, or raise resources.gpus_per_worker so fewer trials share a GPU"
# A trial's process killed (`kill -9`, the kernel's OOM killer, a node lost): Ray says only that
# "the actor died unexpectedly", and the raylet's line about it comes earlier, out of context.
DIED_HINT = ("its process was killed, or ran out of host memory (the kernel's OOM killer: see dmesg); "
             "failures.max_failures restarts a trial from its last checkpoint")
_DIED_ERRORS = ("ActorDiedError", "RayActorError", "WorkerCrashedError")
_DIED_TEXT = "The actor died unexpectedly"
# torch.OutOfMemoryError says the first; older torch raised a RuntimeError saying the same, and
# allocations inside CUDA libraries (cuBLAS, NCCL) say the second.
_OOM_TEXTS = ("CUDA out of memory", "CUDA error: out of memory")
_MAX_LINE = 500


# A full disk, as the OS (ENOSPC; EDQUOT for a quota), pyarrow ("[errno 28] No space left on
# device" inside its own message) and SQLite ("database or disk is full") each say it.
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full")


def no_space(error: BaseException | str | None) -> str | None:
    """What says the disk is full in an error, its causes or its text (a trial's error arrives
    as text), as a short phrase ('no space left on device: /data/x.pt'); None if nothing does."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
            return os.strerror(error.errno).lower() + (f": {error.filename}" if error.filename else "")
        text = str(error).lower()
        for phrase in _NO_SPACE_TEXTS:
            if phrase in text:
                return phrase
        if isinstance(error, str):
            return None
        # Causes only: an error raised while another was handled (MLflow refusing the write
        # of a trial's ENOSPC traceback) is not that error.
        error = error.__cause__
    return None


def one_line(error: BaseException) -> str:
    """'Type: message' on one line; a full disk said so, whatever wrapped it (MLflow's SQLite
    error quotes its SQL and parameters, Tune's a whole traceback)."""
    full = no_space(error)
    if full is not None:
        return f"the disk is full ({full})"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def watched(name: str, metric: str | None) -> bool:
    """Metrics that must stay finite: the spec's metric and every loss."""
    return name == metric or name == "loss" or name.endswith("_loss")


def check_finite(metrics: dict[str, Any], metric: str | None) -> None:
    """Raise `NonFiniteLoss` naming the first watched metric that is NaN or infinite.

    Called before a report leaves the worker, so the diverged epoch never reaches Tune, ASHA or
    MLflow: the trial's history ends at its last finite epoch.
    """
    for name, value in metrics.items():
        if watched(name, metric) and isinstance(value, numbers.Real) and not math.isfinite(value):
            raise NonFiniteLoss(f"{name} became {float(value)} at epoch {metrics.get('epoch', '?')}")


def failure_kind(name: str, message: str) -> str:
    """By the exception's class name and message: from a worker the driver may get only text."""
    if name == NonFiniteLoss.__name__:
        return NON_FINITE
    if any(text in message for text in _OOM_TEXTS):
        return OOM
    return EXCEPTION


@dataclass(frozen=True)
class TrialError:
    line: str  # 'ExceptionType: message', one line: what a user needs first
    kind: str  # NON_FINITE, OOM or EXCEPTION
    traceback: str  # Tune's error file: every failure of the trial, retried ones included


def _load(trial) -> tuple[Any, str]:
    """The pickled exception and the error text Tune wrote for a trial (either may be missing)."""
    from ray import cloudpickle

    error, text = None, ""
    # An unreadable error file must not fail the search.
    with contextlib.suppress(Exception):
        # The local copies: Tune's get_*error() read the storage copy, synced only later.
        if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
            with open(trial.pickled_error_file, "rb") as f:
                error = cloudpickle.load(f)
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file) as f:
                text = f.read()
    return error, text


# The last line of a DataError's traceback, as Ray Data's UserCodeException carries it.
_DATA_ERROR_LINE = re.compile(rf"{re.escape(f'{DataError.__module__}.{DataError.__qualname__}')}: (data\.[^\n]*)")


def data_error(error: BaseException | str | None) -> str | None:
    """The message of the DataError behind an error (or in an error's text), if one is.

    Ray Data raises a task's error as a `UserCodeException` whose only trace of the DataError is
    the task's traceback, as text (the exception itself stays in the task's process, Ray 2.60)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error) is DataError:  # raised in this process
            return str(error)
        found = _DATA_ERROR_LINE.findall(str(error))
        if found:
            return found[-1].strip()
        if isinstance(error, str):
            return None
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None


def _name_and_message(error: Any, text: str) -> tuple[str, str]:
    data = data_error(error if isinstance(error, BaseException) else None) or data_error(text)
    if data is not None:  # the data's fault, not the task's: the line says which value
        return DataError.__name__, data
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the task's exception
    if isinstance(cause, BaseException):
        message = cause.args[0] if len(cause.args) == 1 and isinstance(cause.args[0], str) else str(cause)
        return type(cause).__name__, message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    name, sep, message = (lines[-1] if lines else "").partition(": ")
    return (name.rsplit(".", 1)[-1], message) if sep else ("", name)


def read_trial_error(trial) -> TrialError:
    """How a trial Tune reports as errored failed."""
    error, text = _load(trial)
    name, message = _name_and_message(error, text)
    kind = failure_kind(name, message)
    first = message.strip().splitlines()[0] if message.strip() else ""
    line = f"{name}: {first}" if name and first else (name or first or "trial failed")
    # A Ray Train worker killed: the group's WorkerHealthCheckFailedError, the death in its text.
    died = name in _DIED_ERRORS or _DIED_TEXT in text or _DIED_TEXT in str(error)
    hint = OOM_HINT if kind == OOM else DIED_HINT if died else None
    if hint is not None:  # the hint goes last, so the message is what gets cut to fit
        line = f"{line[: _MAX_LINE - len(hint) - 3]} ({hint})"
    return TrialError(line[:_MAX_LINE], kind, text or line)
