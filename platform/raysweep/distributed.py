"""Data-parallel trials: a Ray Train `TorchTrainer` per Tune trial (Train V2).

Each Tune trial runs `run_distributed`, a small driver that starts a worker group of
`resources.workers_per_trial` processes; every worker runs the same task code against a
`RayTrainContext` (or, for a user's own Ray Train loop, calls it as Ray Train would).
Metrics reach Tune (and so ASHA and MLflow) through `TuneReportCallback`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from .context import RayContext, recorded_by_tune
from .jobenv import scoped_env
from .errors import MissingMetric, NonFiniteLoss
from .spec import Spec
from .storage import join as join_storage


POLL_INTERVAL_S = 0.05
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train's; it reaches the controller and workers


def poll_interval(spec: Spec) -> float:
    """Seconds between Ray Train's polls of a trial's workers: `resources.poll_interval_s`,
    else the user's $RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, else `POLL_INTERVAL_S`.

    Ray Train's controller takes one report per worker per poll, and a worker's next report
    waits until its last was taken, so an epoch shorter than the poll waits for it: Ray's
    default, 2 s, held a 0.07 s digits epoch to 2 s (0.03x of bare DDP). Each poll is a
    remote call into every worker, which a large group with long epochs need not pay 20
    times a second: on two busy cores, 0.9 s epochs trained 4% faster polling every 0.5 s
    (benchmarks/ddp_parity.py --channels 128).
    """
    if spec.resources.poll_interval_s is not None:
        return spec.resources.poll_interval_s
    return float(os.environ.get(POLL_ENV, POLL_INTERVAL_S))


def slow_poll_warning(spec: Spec, task: Any, console) -> list:
    """The driver's `SlowPollWarning`, for a spec whose trials run on Ray Train."""
    from .progress import SlowPollWarning
    from .tasks import needs_ray_train

    return [SlowPollWarning(poll_interval(spec), console)] if needs_ray_train(spec, task) else []


class RayTrainContext(RayContext):
    """A Ray Train worker: DDP model, its own shard of the data, metrics reduced over ranks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        import ray.train

        self._train_ctx = ray.train.get_context()

    @property
    def rank(self) -> int:
        return self._train_ctx.get_world_rank()

    @property
    def world_size(self) -> int:
        return self._train_ctx.get_world_size()

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def _dataset_iterator(self, split: str):
        import ray.train

        # "train" is split by Ray Train (equal row counts per rank); the others arrive whole.
        return ray.train.get_dataset_shard(split)

    def _writes_checkpoints(self) -> bool:
        return self.rank == 0  # every rank reports (Train V2 waits for all); rank 0 saves

    def _ray_report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    def _ray_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()


def _train_worker(loop_config: dict[str, Any]) -> None:
    from .tasks import TrainLoopTask, resolve_task
    from .trial import context_kwargs, exit_is_an_error, reported_or_raise

    spec = Spec.model_validate(loop_config["spec"])
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
    task = resolve_task(spec.task)
    if isinstance(task, TrainLoopTask):  # the user's own Ray Train loop, called as Ray Train would
        with exit_is_an_error():
            task.train_loop_per_worker(loop_config["params"])
        return
    if loop_config.get("splits") is not None:  # the driver's (run_distributed): no load here
        import ray

        task.give_splits(spec.seed, ray.get(loop_config["splits"]))
    ctx = RayTrainContext(data=loop_config.get("data"), recorded_epoch=loop_config.get("recorded_epoch"),
                          **context_kwargs(spec, loop_config.get("started_at"), loop_config.get("seed")))
    with exit_is_an_error():
        reported_or_raise(ctx, task.train(loop_config["params"], ctx))


def _report_callback(metric: str):
    """Ray's `TuneReportCallback`, numbering epochs for loops that report no `epoch`
    (ASHA's time axis; a loop resumed from a checkpoint should report its own), and failing
    the trial whose report lacks the spec's `metric`: Tune would otherwise end the whole
    search with a ValueError of its own."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ReportToTune(TuneReportCallback):
        def __init__(self):
            super().__init__()
            self._reports = 0

        def after_report(self, run_context, metrics, checkpoint):
            self._reports += 1
            if metrics and metric not in metrics[0]:
                raise MissingMetric(
                    f"ray.train.report() got no {metric!r}, the spec's metric (reported: "
                    f"{', '.join(metrics[0]) or 'nothing'})"
                )
            if metrics and "epoch" not in metrics[0]:
                metrics = [{**metrics[0], "epoch": self._reports}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    return ReportToTune()


def run_distributed(config: dict[str, Any], spec: Spec, storage: str, data: Any = None,
                    splits: tuple | None = None) -> None:
    """Tune function trainable for a trial with more than one worker; `splits`: (a reference to)
    the task's own, loaded once by the driver (tasks.base.SupervisedTask.shared_splits) and put
    in Ray's object store (tuner._trainable), which each worker fetches, so that no worker
    imports scikit-learn and loads them.

    Restarts the worker group after a worker error, up to `failures.max_failures` times, each
    time from the trial's latest checkpoint, but never after a `NonFiniteLoss`. raysweep
    restarts it rather than Ray Train (whose own retries take no account of the error), with
    a new `TorchTrainer` of the same run name: Ray Train resumes that run's checkpoints.
    """
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    _pin_cluster_address()
    # Tune restored this trial (--resume): what the search recorded, for Ray Train's newer checkpoints.
    recorded = recorded_by_tune()
    with scoped_env({POLL_ENV: str(poll_interval(spec))}):  # read as each controller starts
        _fit_with_restarts(config, spec, storage, trial_id, data, recorded, splits and splits[0])
    _drain_reports()


def _fit_with_restarts(config: dict[str, Any], spec: Spec, storage: str, trial_id: str, data: Any,
                       recorded: int, splits: Any = None) -> None:
    """`recorded`: the last epoch the search recorded when this process began. A checkpoint
    Ray Train resumes from in the first fit is an earlier process's (a killed driver's trial):
    its epochs after `recorded` are reported again, the dead driver may have lost them. After
    a restart here the driver took every report: nothing is said again."""
    from ray.train import ControllerError, WorkerGroupError

    failures = 0
    while True:
        try:
            _trainer(config, spec, storage, trial_id, data, recorded if failures == 0 else None, splits).fit()
            break
        except ControllerError as exc:  # our report callback's MissingMetric names the failure
            if isinstance(exc.controller_failure, MissingMetric):
                raise exc.controller_failure from exc
            raise
        except WorkerGroupError as exc:
            failures += 1
            error = worker_error(exc)
            if isinstance(error, NonFiniteLoss) or 0 <= spec.failures.max_failures < failures:
                if error is exc:
                    raise
                # The worker's own exception names the failure; the group error, chained,
                # keeps every worker's traceback for the trial's error file.
                raise error from exc


def worker_error(exc: BaseException) -> BaseException:
    """The exception a worker raised, out of Ray Train's group error: a `NonFiniteLoss` if any
    rank raised one (every rank does), else the lowest rank's."""
    from .ray_internals import worker_exceptions

    failures = worker_exceptions(exc)
    return next((f for f in failures if isinstance(f, NonFiniteLoss)), failures[0] if failures else exc)


def _trainer(config: dict[str, Any], spec: Spec, storage: str, trial_id: str, data: Any = None,
             recorded: int | None = None, splits: Any = None):
    """`data` (ingest.TrialData): its datasets go to Ray Train, which splits "train" over the
    workers (equal row counts: DataConfig's streaming_split(equal=True)); val and test reach
    every worker whole, and each evaluates its part (ingest.TrialData.iter_batches)."""
    import ray.train

    from .ray_internals import torch_trainer_class
    from .trial import train_seed, trial_params

    res = spec.resources
    use_gpu = res.gpus_per_worker > 0
    # The meter's clock starts before the group does: its start-up holds the resources too.
    loop_config = {"spec": spec.to_dict(), "params": trial_params(spec, config), "started_at": time.time(),
                   "seed": train_seed(spec, config), "recorded_epoch": recorded, "splits": splits}
    datasets = {}
    if data is not None:
        loop_config["data"], datasets = data.for_workers(), data.datasets
    return torch_trainer_class()(
        _train_worker,
        train_loop_config=loop_config,
        datasets=datasets or None,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers_per_trial,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            # No timestamp: a restarted group (or trial) finds and resumes its own Train run.
            name=f"train-trial_id={trial_id}",
            storage_path=join_storage(storage, spec.name),
            callbacks=[_report_callback(spec.rank_metric)],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            # Restarts are run_distributed's (see there): Ray Train gives up on the first error.
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )


def _pin_cluster_address() -> None:
    """Give Ray Train's controller (and the placement-group cleaner it starts) this cluster's
    address.

    The cleaner frees a worker group's resources when its controller dies, as it does when
    ASHA stops the trial. It finds the cluster through the state API, which without
    `RAY_ADDRESS` looks for a single Ray on the machine: with two (two searches on one
    laptop, a test session beside a local cluster) it found none, the cleaner stopped,
    and the stopped trial's workers' CPUs stayed taken until later trials waited forever.
    Ray Train passes the variables in `ENV_VARS_TO_PROPAGATE` on to the controller, and the
    cleaner inherits the controller's.
    """
    import ray

    from .ray_internals import propagate_to_train_controller

    propagate_to_train_controller("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def _drain_reports(timeout_s: float = 60.0) -> None:
    """Return only once Tune has taken every report off the callback's queue.

    Tune stops collecting a trial's results soon after its function returns; a report still
    queued then (the last epoch's, on a busy machine) was lost: the trial ended an epoch
    short. The queue is the one Ray's `TuneReportCallback` writes to.
    """
    from .ray_internals import tune_report_queue

    queue = tune_report_queue()
    deadline = time.monotonic() + timeout_s
    while not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # Tune hands the item it took to the trial's result queue
