"""The fit loop that built-in tasks share: one epoch of training, one of validation, a report.

The built-in sets live in memory as tensors and are batched by slicing: for the small
tabular and image sets raysweep ships, a `DataLoader`'s per-batch Python overhead would cost
more than the model's compute. Data named in the spec's `data:` section streams through
Ray Data instead (ingest.py); both feed the same epoch loop.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterable

import torch
from torch import nn

from .context import TrainContext

# name -> fn(outputs, targets) giving the metric's *sum* over the batch (averaged globally).
SumMetrics = dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DDP wrapper (its state dict has no `module.` prefix)."""
    return getattr(model, "module", model)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device`; from pinned host memory, so a GPU copy doesn't stall the host."""
    from .sharding import to_device as move

    return move(t, device)


EVAL_BATCH = 4096  # rows per forward pass in evaluation: no gradients, so memory allows many

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class TensorData:
    """In-memory splits on the device for the whole trial (one pinned, asynchronous copy
    each), batched by slicing; each worker takes its shard (sharding.py)."""

    def __init__(self, ctx: TrainContext, train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor]):
        self.ctx = ctx
        self.x_train, self.y_train, self.x_val, self.y_val = (to_device(t, ctx.device) for t in (*train, *val))

    def example(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train[:8], self.y_train[:8]

    def train_batches(self, epoch: int, batch_size: int) -> Batches:
        # Seeded per epoch, so a resumed trial sees the same batches it would have seen.
        order = self.ctx.shard(len(self.x_train), epoch=epoch).to(self.ctx.device)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield self.x_train[idx], self.y_train[idx]

    def val_batches(self) -> Batches:
        return tensor_batches(self.x_val, self.y_val, self.ctx)


class StreamData:
    """The spec's `data:` splits, streamed by Ray Data through `ctx.iter_batches`."""

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx

    def example(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(iter(self.ctx.iter_batches("val", 8)), None)
        if batch is None:  # this worker's part of val is empty: a batch of train then
            batch = next(iter(self.ctx.iter_batches("train", 8)))
        return batch["x"], batch["y"]

    def train_batches(self, epoch: int, batch_size: int) -> Batches:
        for batch in self.ctx.iter_batches("train", batch_size):
            yield batch["x"], batch["y"]

    def val_batches(self) -> Batches:
        for batch in self.ctx.iter_batches("val", EVAL_BATCH):
            yield batch["x"], batch["y"]


def tensor_batches(x: torch.Tensor, y: torch.Tensor, ctx: TrainContext | None = None,
                   batch_size: int = EVAL_BATCH) -> Batches:
    """(x, y) in batches; with `ctx`, only this worker's disjoint part (every sample once)."""
    if ctx is not None and ctx.world_size > 1:
        idx = ctx.shard(len(x), pad=False).to(x.device)
        x, y = x[idx], y[idx]
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Batches,
    loss_fn: Callable,
    metrics: SumMetrics | None = None,
    prefix: str = "val",
    ctx: TrainContext | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean loss and metrics over `batches`, summed over workers when `ctx` is distributed.

    The forward passes use the bare model: DDP's wrapper may run collectives per forward,
    and workers' parts of a split differ by a batch. Its buffers are rank 0's first.
    """
    if ctx is not None:
        ctx.broadcast_buffers(unwrap(model))
    bare = unwrap(model)
    was_training = bare.training
    bare.eval()
    names = ["loss", *(metrics or {})]
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=ctx.device if ctx is not None else device)
    for xb, yb in batches:
        with ctx.autocast() if ctx is not None else contextlib.nullcontext():
            out = bare(xb)
        out = out.float()  # metric sums in fp32 even under bf16 autocast
        sums[0] += loss_fn(out, yb, reduction="sum").double()
        for i, fn in enumerate((metrics or {}).values(), start=1):
            sums[i] += fn(out, yb).double()
        sums[-1] += len(xb)
    if ctx is not None:
        sums = ctx.all_reduce_sum(sums)
    bare.train(was_training)
    count = sums[-1].item()
    if count == 0:
        raise ValueError(f"evaluation got no samples: the {prefix} split is empty")
    return {f"{prefix}_{name}" if name == "loss" else name: (sums[i] / count).item() for i, name in enumerate(names)}


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    metrics: SumMetrics | None = None,
    prefix: str = "val",
    ctx: TrainContext | None = None,
    batch_size: int = EVAL_BATCH,
) -> dict[str, float]:
    """Mean loss and metrics over (x, y); with a distributed `ctx`, each worker evaluates its
    disjoint part and the sums are reduced: exact global values, every sample counted once."""
    return evaluate_batches(model, tensor_batches(x, y, ctx, batch_size), loss_fn, metrics, prefix, ctx, x.device)


def fit(
    ctx: TrainContext,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    batch_size: int,
    loss_fn: Callable = nn.functional.cross_entropy,
    val_metrics: SumMetrics | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    extra_state: dict | None = None,
) -> None:
    """Train for `ctx.max_epochs`, resuming from the context's checkpoint when it has one.

    `train` and `val` are in-memory (x, y) tensors; without them the loop streams the spec's
    `data:` splits (`ctx.iter_batches`). `augment`, if any, transforms each training batch's
    inputs on the device. `lr_scheduler`, if any, steps once per epoch; its state travels
    with the checkpoint, as does `extra_state` (what a task needs to rebuild its model).
    """
    start_epoch = 1
    best_val_loss = float("inf")
    # Ranked by `val_loss_best`, a trial is as good as its best epoch: that epoch's weights go
    # with every checkpoint after it, so the search's test metrics and logged model are the
    # best epoch's, not the last's (models.checkpoint_state).
    keep_best = ctx.metric == "val_loss_best"
    best: dict = {}  # best_model (CPU copies of the weights) and best_epoch, when keep_best
    # Every epoch's metrics, carried by each checkpoint: a resumed trial can say again all
    # those a killed driver may not have recorded, not only its checkpoint's (below).
    history: list[dict] = []
    state = ctx.resume_state
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if lr_scheduler is not None and "lr_scheduler" in state:
            lr_scheduler.load_state_dict(state["lr_scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_val_loss = float(state.get("val_loss_best", best_val_loss))
        best = {k: state[k] for k in ("best_model", "best_epoch") if k in state}
        history = list(state.get("history", []))
        if "metrics" in state and (ctx.resume_unreported or start_epoch > ctx.max_epochs):
            # The search may have lost these epochs' reports: --resume continuing from a later
            # checkpoint than Tune's state names (context.RayContext.resume_state,
            # resume.refill_checkpoints), whose epochs a killed driver never recorded. Say them
            # again: MLflow would miss their points, and a trial at its last epoch would end an
            # epoch short. (A checkpoint of an earlier release holds its own epoch's only.)
            recorded = start_epoch - 2 if ctx.resume_recorded_epoch is None else ctx.resume_recorded_epoch
            again = [m for m in history if m["epoch"] > recorded] if ctx.resume_unreported else []
            for metrics in again or [state["metrics"]]:
                ctx.report_again(dict(metrics))
        if start_epoch > ctx.max_epochs:
            return

    if (train is None) != (val is None):
        raise ValueError("fit: give both train and val tensors, or neither (stream the spec's data: splits)")
    data = StreamData(ctx) if train is None else TensorData(ctx, train, val)
    meter = ctx.meter
    if meter.flops_per_sample is None and start_epoch <= ctx.max_epochs:
        x_example, y_example = data.example()
        if len(x_example):
            # Counted once per trial on a copy of the model (cost.py): forward + backward of a batch.
            with ctx.autocast():
                meter.count_flops(unwrap(model), x_example, y_example, loss_fn)

    for epoch in range(start_epoch, ctx.max_epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=ctx.device)
        samples = 0
        for xb, yb in data.train_batches(epoch, batch_size):
            if augment is not None:
                xb = augment(xb)
            with ctx.autocast():
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(yb)  # stays on device: no sync per batch
            samples += len(yb)
        if lr_scheduler is not None:
            lr_scheduler.step()
        # One collective per epoch for loss, samples and GPU energy, all summed over workers.
        local = [float(samples), meter.local_energy_j()]
        sums = ctx.all_reduce_sum(torch.stack([loss_sum.double(), *(torch.tensor(v, dtype=torch.float64, device=ctx.device) for v in local)]))
        if sums[1].item() == 0:  # every worker's shard was empty: nothing trained, nothing to report
            raise ValueError(f"epoch {epoch} trained on no samples: the train split is empty")
        metrics = {"train_loss": (sums[0] / sums[1]).item()}
        metrics.update(evaluate_batches(model, data.val_batches(), loss_fn, val_metrics, prefix="val", ctx=ctx))
        # The lowest val_loss of any epoch so far: a steadier value to rank trials by
        # (`metric: val_loss_best`) than the last epoch's, which moves 5-30% epoch to epoch
        # at a constant learning rate on a small validation split.
        if keep_best and metrics["val_loss"] < best_val_loss:
            best = {"best_model": {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()},
                    "best_epoch": epoch}
        best_val_loss = min(best_val_loss, metrics["val_loss"])
        metrics["val_loss_best"] = best_val_loss
        metrics["epoch"] = epoch
        metrics["epoch_time_s"] = time.perf_counter() - started
        meter.add_epoch(sums[1].item(), metrics["epoch_time_s"], sums[2].item())
        history.append(dict(metrics))
        checkpoint = None
        if ctx.should_checkpoint(epoch):
            checkpoint = {**(extra_state or {}), "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                          "epoch": epoch, "val_loss_best": best_val_loss, "metrics": dict(metrics),
                          "history": list(history), **best}
            if lr_scheduler is not None:
                checkpoint["lr_scheduler"] = lr_scheduler.state_dict()
        ctx.report(metrics, checkpoint=checkpoint)
