"""`TrainContext`: everything a training loop sees of the platform.

A task is written once against this interface and runs unchanged whether its trial runs
inside the Tune trial process (`InProcessContext`) or as a Ray Train worker group.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator

import torch

from .cost import SEGMENT_KEY, Meter
from .failures import check_finite

from .statefile import REPORT_AGAIN_FILE, check_loadable, load_state, recorded_epoch, save_state


def _number(name: str, value: Any) -> Any:
    """A metric as Tune, ASHA and MLflow take it: a one-element tensor (a loss as computed) or a
    NumPy number becomes a Python number; Tune refused the tensor, and the search's book, which
    keeps Python numbers only, dropped the NumPy float32, so a search whose every trial
    reported its metric failed for want of it. Other values pass as they are."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"ctx.report(): {name} is a tensor of shape {tuple(value.shape)}; report a number")
        return value.item()
    item = getattr(value, "item", None)  # a NumPy scalar (np.float32, np.int64, ...)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


class TrainContext(ABC):
    """What a loop talks to: report, device, rank, world size, resume state."""

    def __init__(
        self,
        *,
        max_epochs: int,
        seed: int,
        train_seed: int | None = None,
        checkpoint_every: int = 1,
        checkpoint_epochs: tuple[int, ...] = (),
        metric: str | None = None,
        objectives: tuple[str, ...] = (),
        precision: str = "fp32",
        meter: dict | None = None,
        data: Any = None,
    ):
        self.max_epochs = max_epochs
        self.seed = seed  # the spec's: what the data split uses
        # Model initialisation and batch order: the spec's seed, except in a run that confirms
        # a configuration with a fresh one (confirm.py), which must keep the same split.
        self.train_seed = seed if train_seed is None else train_seed
        self.checkpoint_every = checkpoint_every
        # Epochs that always save, whatever `checkpoint_every`: those at which ASHA may stop the
        # trial, so that a stopped trial's model is the one of the value it was ranked by.
        self.checkpoint_epochs = frozenset(checkpoint_epochs)
        self.metric = metric  # the spec's metric: every report must carry it
        # Several objectives (`metric: [val_loss, cost_usd]`): each one too, the task's or the meter's.
        self.objectives = tuple(objectives)
        self.precision = precision
        self._reports = 0
        self._checkpoint_checked = False  # the first checkpoint loads back (statefile.check_loadable)
        self.reported = False  # any report at all, said again ones included (trial.reported_or_raise)
        # The checkpoint resumed from holds an epoch whose report the search may have lost
        # (statefile.REPORT_AGAIN_FILE): the loop says it again (`report_again`).
        self.resume_unreported = False
        # ... and the last epoch the search did record then, whose later ones the loop says again
        # (None: all but the checkpoint's own).
        self.resume_recorded_epoch: int | None = None
        # Created now, so its clock starts with the trial; the device is known only later.
        # A dict: the Meter's settings; anything else: a meter of one's own (benchmarks).
        self._meter = Meter(**(meter or {})) if meter is None or isinstance(meter, dict) else meter
        self._meter_attached = False
        # The spec's `data:` section as Ray Data datasets (ingest.TrialData), or None.
        self._data = data

    @property
    def meter(self) -> Meter:
        """The trial's cost and compute meter (cost.py); the loop feeds it samples and FLOPs."""
        if not self._meter_attached:
            self._meter_attached = True
            self._meter.attach(self.device)
        return self._meter

    def _complete(self, metrics: dict[str, float]) -> dict[str, float]:
        """Check a report before it leaves the worker; number epochs a task didn't; add cost.

        A NaN or infinite loss (or spec metric) raises `NonFiniteLoss` here, so the diverged
        epoch is never reported. Under Ray Train every rank reports the same reduced values
        and so raises at the same epoch: no rank is left waiting in a collective.
        """
        if self.metric is not None and self.metric not in metrics:
            raise KeyError(
                f"ctx.report() got no {self.metric!r}, the spec's metric (reported: {', '.join(metrics) or 'nothing'})"
            )
        metrics = {name: _number(name, value) for name, value in metrics.items()}
        if "epoch" not in metrics:
            metrics = {**metrics, "epoch": self.epoch}
        self._reports += 1
        self.reported = True
        check_finite(metrics, self.metric)
        metrics = {**self.meter.metrics(), **metrics}  # the task's own names win
        missing = [name for name in self.objectives if name not in metrics]
        if missing:
            shown = sorted(name for name in metrics if name != SEGMENT_KEY)  # the ledger's, not a metric
            raise KeyError(f"ctx.report() got no {missing[0]!r}, one of the spec's objectives (reported: "
                           f"{', '.join(shown)})")
        return metrics

    def _check_first(self, checkpoint: dict) -> None:
        if not self._checkpoint_checked:
            self._checkpoint_checked = True
            check_loadable(checkpoint)

    def report_again(self, metrics: dict[str, float]) -> None:
        """Report the resumed checkpoint's epoch again, from the metrics saved with it: no
        checkpoint, and not counted as an epoch of this process (`epoch` stays the next one's).
        MLflow keeps one point per epoch, so a report the search did record changes nothing there."""
        self.report(metrics)
        self._reports -= 1

    # -- topology
    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Wrap forward passes (and the loss) in this: bf16 autocast when the spec asks for it.

        Weights, gradients and the optimizer stay fp32; matmuls and convolutions run in bf16
        (tensor cores on a GPU). fp32 is a no-op.
        """
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def epoch(self) -> int:
        """The epoch being trained (1-based): the one the next `report` is numbered as,
        counting the epochs of the checkpoint a trial resumed from."""
        return int((self.resume_state or {}).get("epoch", 0)) + self._reports + 1

    # -- model and data
    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model to this worker's device (and wrap it for data parallelism)."""
        return model.to(self.device)

    def shard(self, n: int, *, epoch: int | None = None, pad: bool = True) -> torch.Tensor:
        """Indices of this worker's share of `n` samples (sharding.py).

        `epoch` given: drawn from that epoch's seeded permutation of all `n` (the same on
        every worker, and again after a restart). `pad` (training): every worker gets
        ceil(n / world_size) indices, so all run the same number of steps; `pad=False`
        (evaluation): disjoint shards, each sample exactly once over all workers.
        """
        from .sharding import shard_indices

        return shard_indices(n, self.rank, self.world_size, seed=self.train_seed, epoch=epoch, pad=pad)

    def prepare_data_loader(self, loader: Any, *, pad: bool = True) -> Any:
        """Your own `torch.utils.data.DataLoader`, ready for this worker.

        On a worker group: the same loader over this rank's shard of its dataset (a
        shuffling loader reshuffles every epoch, seeded; `pad` as for `shard`: leave it on
        for training, `pad=False` for evaluation). On one worker: the loader itself. Either
        way its batches arrive on `ctx.device` (pinned and non-blocking on CUDA).
        """
        from .sharding import DeviceLoader, shard_loader

        if self.world_size > 1:
            loader = shard_loader(loader, self.rank, self.world_size, seed=self.train_seed, pad=pad)
        return DeviceLoader(loader, self.device, lambda: self.epoch)

    @property
    def data_info(self) -> dict | None:
        """What the spec's `data:` section holds (ingest.py): `format`, `classes`,
        `input_shape`, rows per split, the preprocessing statistics; None without one."""
        return None if self._data is None else self._data.info

    def iter_batches(self, split: str, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches `{"x": ..., "y": ...}` of the spec's `data:` split on `ctx.device`, streamed
        by Ray Data, preprocessed.

        "train": this worker's shard (Ray Train splits it into equal row counts), shuffled
        differently each epoch; "val" / "test": this worker's disjoint part, every row once
        over all workers, so sums reduced with `all_reduce_sum` are exact.
        """
        if self._data is None:
            raise RuntimeError("ctx.iter_batches: the spec has no data: section to stream from")
        return self._data.iter_batches(split, batch_size, device=self.device, rank=self.rank,
                                       world_size=self.world_size, seed=self.train_seed, epoch=self.epoch,
                                       iterator=self._dataset_iterator, last_epoch=self.epoch >= self.max_epochs)

    def _dataset_iterator(self, split: str) -> Any:
        """What this worker streams a split from: the Ray Dataset itself in one process."""
        return self._data.local_dataset(split)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum `values` over workers (validation metrics must be global, not rank 0's)."""
        return values

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every worker rank 0's buffers (BatchNorm's running statistics), as they are
        checkpointed: each rank updates its own copy with its own batches in training."""

    # -- progress
    def should_checkpoint(self, epoch: int) -> bool:
        return epoch % self.checkpoint_every == 0 or epoch >= self.max_epochs or epoch in self.checkpoint_epochs

    @abstractmethod
    def report(self, metrics: dict[str, float], checkpoint: dict | None = None) -> None:
        """Report one epoch's metrics; `checkpoint` is a state dict to save with them."""

    @property
    @abstractmethod
    def resume_state(self) -> dict | None:
        """The state saved with the latest checkpoint of this trial, or None on a fresh start."""


class LocalContext(TrainContext):
    """A `TrainContext` in this process, without Ray: run a task by hand (a notebook, a
    debugger), or in tests and benchmarks.

    Every report (metrics as Tune would get them, the cost meter's included) is kept in
    `reports` and passed to `on_report(metrics, checkpoint)`, which may raise to stop the
    training (as a pruner does). Checkpoint state dicts are kept, copied, in `checkpoints`;
    `checkpoints=False` asks the loop for none. `resume`: a state dict to continue from.
    `rank` and `world_size` make it one rank of a pretended group: sharding follows them,
    collectives are not run.
    """

    def __init__(self, *, max_epochs: int = 1, seed: int = 0, resume: dict | None = None,
                 on_report: Callable[[dict, dict | None], None] | None = None, checkpoints: bool = True,
                 rank: int = 0, world_size: int = 1, device: str = "cpu", **kwargs):
        super().__init__(max_epochs=max_epochs, seed=seed, **kwargs)
        self.reports: list[dict[str, float]] = []
        self.checkpoints: list[dict] = []
        self._resume, self._on_report, self._keep = resume, on_report, checkpoints
        self._rank, self._world_size, self._device = rank, world_size, torch.device(device)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def device(self) -> torch.device:
        return self._device

    def should_checkpoint(self, epoch: int) -> bool:
        return self._keep and super().should_checkpoint(epoch)

    def report(self, metrics: dict[str, float], checkpoint: dict | None = None) -> None:
        metrics = self._complete(metrics)
        self.reports.append(metrics)
        if checkpoint is not None:
            self._check_first(checkpoint)
            # A copy: the loop goes on training the tensors the state dict shares.
            checkpoint = copy.deepcopy(checkpoint)
            self.checkpoints.append(checkpoint)
        if self._on_report is not None:
            self._on_report(metrics, checkpoint)

    @property
    def resume_state(self) -> dict | None:
        return self._resume


class RayContext(TrainContext):
    """Shared by both Ray paths: they differ only in the report / checkpoint functions."""

    def __init__(self, *, recorded_epoch: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self._resume: dict | None = None
        self._resume_loaded = False
        # A trial process started again (--resume) on Ray Train's own checkpoints: the last
        # epoch the search had recorded by Tune's (`recorded_by_tune`); None: a fresh process.
        self._recorded_epoch = recorded_epoch

    @abstractmethod
    def _ray_report(self, metrics: dict, checkpoint_dir: str | None) -> None: ...

    @abstractmethod
    def _ray_checkpoint(self):  # the trial's latest ray checkpoint, or None
        ...

    def _writes_checkpoints(self) -> bool:
        return True

    def report(self, metrics: dict[str, float], checkpoint: dict | None = None) -> None:
        metrics = self._complete(metrics)
        directory = None
        if checkpoint is not None:  # on every rank: all of them fail at the same report
            self._check_first(checkpoint)
        if checkpoint is not None and self._writes_checkpoints():
            # Written now, in this thread: the next epoch changes the tensors the state dict shares.
            directory = tempfile.TemporaryDirectory(prefix="raysweep-ckpt-")
            save_state(checkpoint, directory.name)
        self._send(lambda: self._ray_report(metrics, directory and directory.name),
                   after=directory.cleanup if directory else lambda: None)

    def _send(self, report: Callable[[], None], after: Callable[[], None]) -> None:
        """Run `report`, then `after` (the checkpoint's directory removed); InProcessContext may
        hand both to a thread (`scheduler.report: async`)."""
        try:
            report()
        finally:
            after()

    def _checkpoints_left(self, after: str | None) -> list:
        """Checkpoints of this trial on storage later than `after` (the one Tune restores it
        from, by name; None: none), newest first: the in-process trial's (InProcessContext)."""
        return []

    @property
    def resume_state(self) -> dict | None:
        if not self._resume_loaded:
            self._resume_loaded = True
            ckpt = self._ray_checkpoint()
            # A driver killed after a checkpoint reached storage but before Tune's saved state
            # named it restores the trial from an older one, or from none: the trial trains
            # those epochs again (and bills them twice). The newest whole one goes on instead,
            # the epochs after Tune's reported again (the dead driver may never have recorded them).
            for later in self._checkpoints_left(None if ckpt is None else os.path.basename(ckpt.path)):
                try:
                    self._resume, _ = _load(later, self.device)
                except _CUT_SHORT:  # by the kill
                    continue
                self.resume_unreported = True
                # Tune's own checkpoint's epoch was recorded (Tune registered it): the rest are said again.
                self.resume_recorded_epoch = _epoch(ckpt)
                return self._resume
            if ckpt is not None:
                self._resume, self.resume_recorded_epoch = _load(ckpt, self.device)
                if self.resume_recorded_epoch is None and self._recorded_epoch is not None:
                    # Ray Train's newest checkpoint, in its own run directory: it may be newer
                    # than Tune's, and the epochs after Tune's still in the dead driver's buffer.
                    self.resume_recorded_epoch = min(self._recorded_epoch, int(self._resume["epoch"]) - 1)
                self.resume_unreported = self.resume_recorded_epoch is not None
        return self._resume


# What loading a checkpoint's state raises when a kill cut it short (or left none).
_CUT_SHORT = (OSError, RuntimeError, EOFError, ValueError)


def _load(checkpoint, device) -> tuple[dict, int | None]:
    """A checkpoint's state, and for a copy `--resume` put in place of one Tune deleted
    (statefile.REPORT_AGAIN_FILE) the last epoch the search recorded; None for any other."""
    with checkpoint.as_directory() as directory:
        state = load_state(directory, map_location=device)
        marker = os.path.join(directory, REPORT_AGAIN_FILE)
        if not os.path.exists(marker):
            return state, None
        with open(marker) as f:
            return state, recorded_epoch(f.read(), int(state["epoch"]))


def recorded_by_tune() -> int:
    """In a Tune trial process: the last epoch the search recorded by the checkpoint Tune
    restored the trial from (`_epoch`); 0 for none."""
    from ray import tune

    return _epoch(tune.get_checkpoint())


def _epoch(checkpoint) -> int:
    """The last epoch the search recorded by a checkpoint Tune registered: its own, or for a
    copy `--resume` put in its place the one its marker names; 0: none, or none that loads."""
    if checkpoint is None:
        return 0
    try:
        state, recorded = _load(checkpoint, "cpu")
    except _CUT_SHORT:
        return 0
    return int(state["epoch"]) if recorded is None else recorded


class _PendingReport:
    """At most one epoch's report in flight, in a thread of its own (`scheduler.report: async`).

    Tune's function trainables report synchronously: `tune.report` returns only once the
    driver has taken the result and asked for the next, so the loop waits a round trip each
    epoch. Here the training thread hands the report over and trains on; the next report (or
    the trial's end) waits for it first, so reports keep their order and the lag is one epoch.
    An error in the thread, or Tune's stop (SystemExit(0) when ASHA stops the trial), is raised
    in the training thread at that wait: the epoch trained meanwhile is never reported.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def send(self, report: Callable[[], None], after: Callable[[], None]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(report, after), name="raysweep-report", daemon=True)
        self._thread.start()

    def _run(self, report: Callable[[], None], after: Callable[[], None]) -> None:
        try:
            report()
        except BaseException as exc:  # noqa: BLE001 - SystemExit included: raised in the training thread
            self._error = exc
        finally:
            after()

    def wait(self, *, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


class InProcessContext(RayContext):
    """A one-worker trial running inside its Tune trial process; `async_report`: each epoch's
    report in a thread while the next trains (`_PendingReport`)."""

    def __init__(self, *, device: str = "cpu", async_report: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._device = torch.device(device)
        self._pending = _PendingReport() if async_report else None

    def _send(self, report: Callable[[], None], after: Callable[[], None]) -> None:
        if self._pending is None:
            super()._send(report, after)
        else:
            self._pending.send(report, after)

    def flush(self, *, raise_error: bool = True) -> None:
        """Wait for the last epoch's report (the trial function's end)."""
        if self._pending is not None:
            self._pending.wait(raise_error=raise_error)

    @property
    def device(self) -> torch.device:
        return self._device

    def _ray_report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    def _ray_checkpoint(self):
        from ray import tune

        return tune.get_checkpoint()

    def _checkpoints_left(self, after: str | None) -> list:
        from ray import tune

        from .ray_internals import trial_storage
        from .statefile import checkpoint_dirs

        fs, trial_dir, storage = trial_storage()
        found = checkpoint_dirs(fs, trial_dir)
        if found:
            # Tune numbers the next checkpoint from its saved state, which may lag those on
            # storage (above): past them, so none is written over and names keep epoch order.
            storage.current_checkpoint_index = max(storage.current_checkpoint_index, found[-1][0] + 1)
        since = next((index for index, name in found if name == after), -1)
        return [tune.Checkpoint(f"{trial_dir}/{name}", filesystem=fs) for index, name in reversed(found) if index > since]
