"""Every exception raysweep raises to its callers, and the CLI exit code each one means.

No imports: the lowest layer. Modules raise these; the CLI maps them to exit codes (2 for
bad input, 1 for a failed run, 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input (a spec file, key, override, flag or cluster that cannot hold it). The message
    is one line, ready to print (CLI exit code 2)."""


class _WithResult(Exception):
    """An end of a run that still recorded something: `result` holds it (the CLI writes it as
    --summary-json before it exits)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class RunFailed(_WithResult, RuntimeError):
    """A search or training run failed (CLI exit code 1); `result`: what it did record."""


class SearchFailed(RunFailed):
    """No trial of the search produced a value of its metric, or its last steps failed."""


class TooManyFailures(SearchFailed):
    """`search.max_failed_trials` trials failed, so the search stopped before its end."""


class TrainFailed(RunFailed):
    """The training run raised or never reported its metric."""


class Interrupted(_WithResult):
    """The run was stopped by Ctrl-C, SIGTERM or SIGHUP, after Tune saved its state (CLI exit
    code 128 + `signum`: 130, 143, 129); `result`: what had finished."""

    signum = 2  # SIGINT; interrupt.Interrupt says which signal it was


class DataError(ValueError):
    """A value in the spec's data that no trial can use, found as Ray Data reads it (ingest.py);
    the message names the split and column (`data.val: column 'x' has ...`). Raised inside
    Ray Data's tasks, it reaches the driver as text (failures.data_error reads it)."""


class NonFiniteLoss(ValueError):
    """A loss or the spec's metric became NaN or infinite: the trial diverged.

    Never retried under `failures.max_failures`: resumed from its last checkpoint, a
    deterministic divergence would only happen again.
    """


class MissingMetric(ValueError):
    """A plain Ray Train loop reported without the spec's metric, or a task returned without
    reporting at all: its trial fails."""


class TaskExited(RuntimeError):
    """A task called `sys.exit()` (or `exit()`) in a trial: its trial fails saying so
    (`trial.exit_is_an_error`). Uncaught, SystemExit ended Ray's actor, which the search then
    reported as a process that died (killed, or out of memory)."""
