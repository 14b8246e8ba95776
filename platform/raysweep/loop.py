"""The fit loop that built-in tasks share: one epoch of training, one of validation, a report.

Data lives in memory as tensors and is batched by slicing: for the small tabular and image
sets raysweep ships, a `DataLoader`'s per-batch Python overhead would cost more than the
model's compute.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

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
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    metrics: SumMetrics | None = None,
    prefix: str = "val",
    ctx: TrainContext | None = None,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Mean loss and metrics over (x, y); summed over workers when `ctx` is distributed."""
    was_training = model.training
    model.eval()
    names = ["loss", *(metrics or {})]
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with ctx.autocast() if ctx is not None else contextlib.nullcontext():
            out = model(xb)
        out = out.float()  # metric sums in fp32 even under bf16 autocast
        sums[0] += loss_fn(out, yb, reduction="sum").double()
        for i, fn in enumerate((metrics or {}).values(), start=1):
            sums[i] += fn(out, yb).double()
        sums[-1] += len(xb)
    if ctx is not None:
        sums = ctx.all_reduce_sum(sums)
    model.train(was_training)
    count = sums[-1].item()
    return {f"{prefix}_{name}" if name == "loss" else name: (sums[i] / count).item() for i, name in enumerate(names)}


def fit(
    ctx: TrainContext,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    loss_fn: Callable = nn.functional.cross_entropy,
    val_metrics: SumMetrics | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    """Train for `ctx.max_epochs`, resuming from the context's checkpoint when it has one.

    `lr_scheduler`, if any, steps once per epoch; its state travels with the checkpoint.
    """
    start_epoch = 1
    best_val_loss = float("inf")
    # Ranked by `val_loss_best`, a trial is as good as its best epoch: that epoch's weights go
    # with every checkpoint after it, so the search's test metrics and logged model are the
    # best epoch's, not the last's (models.checkpoint_state).
    keep_best = ctx.metric == "val_loss_best"
    best: dict = {}  # best_model (CPU copies of the weights) and best_epoch, when keep_best
    state = ctx.resume_state
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if lr_scheduler is not None and "lr_scheduler" in state:
            lr_scheduler.load_state_dict(state["lr_scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_val_loss = float(state.get("val_loss_best", best_val_loss))
        best = {k: state[k] for k in ("best_model", "best_epoch") if k in state}

    # The splits live on the device for the whole trial: one (pinned, asynchronous) copy each.
    x_train, y_train, x_val, y_val = (to_device(t, ctx.device) for t in (*train, *val))
    shard = ctx.shard(len(x_train))
    x_train, y_train = x_train[shard], y_train[shard]
    n = len(x_train)
    meter = ctx.meter
    if meter.flops_per_sample is None and n:
        # Counted once per trial on a copy of the model (cost.py): forward + backward of a batch.
        with ctx.autocast():
            # A few samples suffice: the count is per sample (and the copy's memory stays small).
            meter.count_flops(unwrap(model), x_train[:8], y_train[:8], loss_fn)

    for epoch in range(start_epoch, ctx.max_epochs + 1):
        started = time.perf_counter()
        model.train()
        # Seeded per epoch, so a resumed trial sees the same batches it would have seen.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.seed * 100_003 + epoch))
        order = order.to(ctx.device)
        loss_sum = torch.zeros((), device=ctx.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            xb, yb = x_train[idx], y_train[idx]
            with ctx.autocast():
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)  # stays on device: no sync per batch
        if lr_scheduler is not None:
            lr_scheduler.step()
        # One collective per epoch for loss, samples and GPU energy, all summed over workers.
        local = [float(n), meter.local_energy_j()]
        sums = ctx.all_reduce_sum(torch.stack([loss_sum.double(), *(torch.tensor(v, dtype=torch.float64, device=ctx.device) for v in local)]))
        metrics = {"train_loss": (sums[0] / sums[1]).item()}
        metrics.update(evaluate(model, x_val, y_val, loss_fn, val_metrics, prefix="val", ctx=ctx))
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
        checkpoint = None
        if ctx.should_checkpoint(epoch):
            checkpoint = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                          "val_loss_best": best_val_loss, **best}
            if lr_scheduler is not None:
                checkpoint["lr_scheduler"] = lr_scheduler.state_dict()
        ctx.report(metrics, checkpoint=checkpoint)
