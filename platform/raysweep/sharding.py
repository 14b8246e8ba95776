"""Which samples each data-parallel worker trains and evaluates on, and the DataLoader wrapper.

Every rank of a DDP trial must run the same number of optimizer steps each epoch: each
backward pass all-reduces gradients, and a rank that runs out of batches first leaves the
others waiting in a collective (gloo: "Connection reset by peer"; NCCL: a hang until a
timeout). Measured: breast_cancer's 341 training rows at batch 34 on 2 ranks gave strided
shards of 171 and 170 rows, 6 and 5 batches, and a gloo crash in the first epoch.

The scheme is `DistributedSampler`'s: one permutation of all samples per epoch (seeded, the
same on every rank), padded by repeating its first samples to a multiple of the world size,
then dealt out round-robin. Every rank gets ceil(n / world_size) samples, so the same number
of batches whatever the batch size; at most world_size - 1 samples are seen twice in an
epoch. Chosen over `torch.distributed.algorithms.Join` (which shadows the missing
collectives of ranks that ran out) because Join covers DDP's own all-reduces only, not a
loop's metric reductions or a BatchNorm's buffer broadcasts, and over dropping the tail
(`drop_last`), which never trains on some samples of a fixed split.

Evaluation needs each sample exactly once, so there is a second, unpadded mode: disjoint
shards that differ in size by at most one sample. It is safe only where nothing
collective runs per batch: forward passes under `no_grad` of the unwrapped model, with the
sums all-reduced once at the end (loop.evaluate).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler

from .seeds import epoch_seed


def shard_indices(n: int, rank: int, world_size: int, *, seed: int = 0, epoch: int | None = None,
                  pad: bool = True) -> torch.Tensor:
    """Rank `rank`'s indices into `n` samples (int64).

    `epoch` given: from that epoch's seeded permutation of all `n`; else in order.
    `pad`: ceil(n / world_size) indices on every rank (training); else disjoint shards
    covering each sample once (evaluation).
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))) \
        if epoch is not None else torch.arange(n)
    if world_size == 1:
        return order
    if pad and n:
        total = math.ceil(n / world_size) * world_size
        # Repeat as often as needed: n may be smaller than the world size.
        order = order.repeat(math.ceil(total / n))[:total]
    return order[rank::world_size]


class ShardSampler(Sampler[int]):
    """`shard_indices` as a `Sampler` whose `set_epoch` reshuffles (a `DistributedSampler`
    that can also leave samples unpadded)."""

    def __init__(self, n: int, rank: int, world_size: int, *, shuffle: bool, seed: int, pad: bool):
        self.n, self.rank, self.world_size = n, rank, world_size
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch if self.shuffle else None
        return iter(shard_indices(self.n, self.rank, self.world_size, seed=self.seed, epoch=epoch, pad=self.pad).tolist())

    def __len__(self) -> int:
        if self.pad or self.world_size == 1:
            return math.ceil(self.n / self.world_size) if self.n else 0
        return len(range(self.rank, self.n, self.world_size))


def shard_loader(loader: DataLoader, rank: int, world_size: int, *, seed: int, pad: bool) -> DataLoader:
    """The same DataLoader (dataset, batch size, workers, collate, ...) over this rank's shard.

    A shuffling loader (RandomSampler) reshuffles every epoch through `ShardSampler.set_epoch`;
    a sequential one keeps its order within the shard.
    """
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "prepare_data_loader: an IterableDataset has no indices to shard; split it by "
            "ctx.rank and ctx.world_size in the dataset, or stream files with the spec's data: section"
        )
    sampler = loader.sampler
    if not isinstance(sampler, (RandomSampler, SequentialSampler)) or type(loader.batch_sampler) is not BatchSampler:
        raise TypeError(
            f"prepare_data_loader: the loader's {type(sampler).__name__} (or batch sampler) is its own; "
            "give it a plain DataLoader(dataset, batch_size, shuffle=...) and raysweep shards it"
        )
    if isinstance(sampler, RandomSampler) and (sampler.replacement or sampler._num_samples is not None):
        raise TypeError("prepare_data_loader: a RandomSampler with replacement or num_samples cannot be sharded")
    shard = ShardSampler(len(loader.dataset), rank, world_size, shuffle=isinstance(sampler, RandomSampler),
                         seed=seed, pad=pad)
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=shard, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
        persistent_workers=loader.persistent_workers, pin_memory_device=loader.pin_memory_device,
        in_order=loader.in_order,
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensor, or tuple / list / dict of them) on `device`; from pinned memory and
    asynchronously on CUDA, so the copy overlaps the previous step's compute."""
    if torch.is_tensor(batch):
        if device.type == "cuda":
            return (batch if batch.is_pinned() else batch.pin_memory()).to(device, non_blocking=True)
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


class DeviceLoader:
    """Iterates a DataLoader with its batches on the trial's device, telling its sampler the
    epoch first (so a sharded shuffle differs each epoch, and a resumed trial repeats none).

    Everything else (`len`, `dataset`, `sampler`, `batch_size`) is the wrapped loader's.
    """

    def __init__(self, loader: DataLoader, device: torch.device, epoch: Callable[[], int]):
        self.loader, self.device, self._epoch = loader, device, epoch

    def __iter__(self) -> Iterator[Any]:
        set_epoch = getattr(self.loader.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self._epoch())
        for batch in self.loader:
            yield to_device(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
