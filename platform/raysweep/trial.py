"""One trial: the function Tune runs for each sampled configuration.

A one-worker trial runs its task inside the Tune trial process (docs/design.md, point 1: the
Train-in-Tune pattern costs ~15 s per trial before its first epoch; this path ~0.005 s).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from .context import InProcessContext, TrainContext
from .errors import MissingMetric, TaskExited
from .spec import CONFIRM_KEY, Spec
from .tasks import resolve_task


@contextlib.contextmanager
def exit_is_an_error() -> Iterator[None]:
    """The task's `sys.exit()` fails its trial (`TaskExited`, the exit chained for its line)."""
    try:
        yield
    except SystemExit as exc:
        raise TaskExited(f"the task called sys.exit({exc.code!r}); a trial ends by returning, "
                         "or fails by raising") from exc


def reported_or_raise(ctx: TrainContext, returned: Any) -> None:
    """A task that returned without a single `ctx.report` fails its trial saying so (the
    search said only that no trial reported its metric). Returning the metrics, as a Tune
    function trainable may, is named: raysweep takes them from `ctx.report` alone. A trial
    resumed from a checkpoint may have nothing left to train (its driver died as it ended)."""
    if ctx.reported or ctx.resume_state is not None:
        return
    got = "" if returned is None else f" (it returned {repr(returned)[:80]}: report that instead)"
    raise MissingMetric(f"the task returned without calling ctx.report(): report {ctx.metric!r} "
                        f"once per epoch{got}")


def trial_params(spec: Spec, config: dict[str, Any]) -> dict[str, Any]:
    """What a task sees and MLflow records: fixed hyperparameters plus the sampled ones."""
    return {**spec.fixed, **{k: v for k, v in config.items() if k != CONFIRM_KEY}}


def train_seed(spec: Spec, config: dict[str, Any]) -> int:
    """The seed a trial's model initialisation and batch order use: the spec's, or a confirming
    run's own."""
    return config.get(CONFIRM_KEY, {}).get("seed", spec.seed)


def context_kwargs(spec: Spec, started_at: float | None = None, seed: int | None = None) -> dict[str, Any]:
    """What both paths' contexts take from the spec; `started_at`: time.time() when the trial
    function began, where the cost meter's clock starts (cost.py); `seed`: the training seed
    (`train_seed`), where not the spec's."""
    return {
        "max_epochs": spec.max_epochs,
        "seed": spec.seed,
        "train_seed": spec.seed if seed is None else seed,
        "checkpoint_every": spec.checkpoint.every,
        "checkpoint_epochs": tuple(spec.asha_rungs) if spec.scheduler.type == "asha" else (),
        "metric": spec.rank_metric,
        "objectives": tuple(m for m, _ in spec.objectives) if spec.multi_objective else (),
        "precision": spec.precision,
        "meter": {
            "workers": spec.resources.workers_per_trial,
            "cpus_per_worker": spec.resources.cpus_per_worker,
            "gpus_per_worker": spec.resources.gpus_per_worker,
            "cpu_hour_usd": spec.cost.cpu_hour_usd,
            "gpu_hour_usd": spec.cost.gpu_hour_usd,
            "country": spec.cost.country,
            "started_at": started_at,
        },
    }


def run_in_process(config: dict[str, Any], spec: Spec, data: Any = None, splits: Any = None) -> None:
    """Tune function trainable for a one-worker trial; `data`: the spec's data: splits
    (ingest.TrialData), streamed whole; `splits`: the task's own, loaded once by the driver
    (tasks.base.SupervisedTask.shared_splits)."""
    started_at = time.time()
    res = spec.resources
    # Ray sets OMP_NUM_THREADS from the trial's CPUs; torch reads it only at import, and a
    # reused actor may have imported torch for another spec.
    torch.set_num_threads(max(1, int(res.cpus_per_worker)))
    ctx = InProcessContext(device="cuda" if res.gpus_per_worker > 0 else "cpu", data=data,
                           async_report=spec.scheduler.report == "async",
                           **context_kwargs(spec, started_at, train_seed(spec, config)))
    task = resolve_task(spec.task)
    if splits is not None:
        task.give_splits(spec.seed, splits)
    try:
        with exit_is_an_error():
            reported_or_raise(ctx, task.train(trial_params(spec, config), ctx))
    except BaseException:
        ctx.flush(raise_error=False)  # the epoch before lands; the training's own error is the one raised
        raise
    ctx.flush()
