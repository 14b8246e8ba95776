"""User tasks for the sharding tests ("tests.data_tasks:..."): each rank writes what it saw
(a digest of its parameters after every epoch, the sample ids it trained and evaluated on)
to `config["out_dir"]` for the test to compare across ranks."""

from __future__ import annotations

from pathlib import Path


def _write(path, obj):
    import os

    import torch

    torch.save(obj, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def params_of(model):
    """CPU copies of the bare model's parameters."""
    from raysweep.loop import unwrap

    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).named_parameters()}


class RecordsParams:
    """The built-in `tabular` task, unchanged, with a probe: after every epoch's report each
    rank saves its parameters."""

    def train(self, config, ctx):
        from raysweep.tasks.tabular import Tabular

        out, models = Path(config["out_dir"]), []
        prepare, report = ctx.prepare_model, ctx.report

        def prepare_model(model):
            models.append(prepare(model))
            return models[-1]

        def probe(metrics, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            _write(out / f"params-rank{ctx.rank}-epoch{metrics['epoch']}.pt", params_of(models[0]))

        ctx.prepare_model, ctx.report = prepare_model, probe
        Tabular().train(config, ctx)


class IndexedDigits:
    """Digits as a map-style Dataset whose items carry their index, so a rank can say which
    samples it trained on."""

    def __init__(self, split: str, n: int | None = None):
        from raysweep.tasks.digits import digits_splits

        x, y = getattr(digits_splits(0), split)
        self.x, self.y = x[:n], y[:n]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def own_loader(config, ctx):
    """A user's own loop: plain DataLoaders through `ctx.prepare_data_loader` (feed "loader")
    or tensors indexed by `ctx.shard` (feed "shard"); DDP model, validation summed over ranks.
    `n_train` train samples (uneven for the world size at `batch_size`)."""
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(ctx.seed)
    train_set, val_set = IndexedDigits("train", config["n_train"]), IndexedDigits("val")
    model = ctx.prepare_model(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    bs = int(config["batch_size"])
    if config["feed"] == "loader":
        train = ctx.prepare_data_loader(DataLoader(train_set, batch_size=bs, shuffle=True))
        val = ctx.prepare_data_loader(DataLoader(val_set, batch_size=bs), pad=False)
    out = Path(config["out_dir"])
    for epoch in range(1, ctx.max_epochs + 1):
        if config["feed"] == "loader":
            batches, val_batches = train, val
        else:
            idx = ctx.shard(len(train_set), epoch=epoch)
            vidx = ctx.shard(len(val_set), pad=False)
            batches = [(train_set.x[i], train_set.y[i], i) for i in idx.split(bs)]
            val_batches = [(val_set.x[i], val_set.y[i], i) for i in vidx.split(bs)]
        seen, steps = [], 0
        for x, y, ids in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += ids.tolist()
            steps += 1
        sums, val_seen = torch.zeros(3, dtype=torch.float64), []
        with torch.no_grad():
            for x, y, ids in val_batches:
                out_ = model.module(x) if hasattr(model, "module") else model(x)
                sums += torch.tensor([torch.nn.functional.cross_entropy(out_, y, reduction="sum").item(),
                                      (out_.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
                val_seen += ids.tolist()
        sums = ctx.all_reduce_sum(sums)
        _write(out / f"seen-rank{ctx.rank}-epoch{epoch}.pt",
               {"train": seen, "val": val_seen, "steps": steps, "params": params_of(model)})
        ctx.report({"val_loss": (sums[0] / sums[2]).item(), "val_accuracy": (sums[1] / sums[2]).item(),
                    "val_count": sums[2].item(), "epoch": epoch})


def stream_probe(config, ctx):
    """A user loop on the spec's data: section through `ctx.iter_batches`: a linear model,
    DDP; each rank records its steps, train rows and val rows per epoch, and its parameters."""
    import math

    import torch

    info = ctx.data_info
    torch.manual_seed(ctx.seed)
    model = ctx.prepare_model(torch.nn.Linear(math.prod(info["input_shape"]), len(info["classes"])))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    out = Path(config["out_dir"])
    for epoch in range(1, ctx.max_epochs + 1):
        steps = rows = 0
        for batch in ctx.iter_batches("train", int(config["batch_size"])):
            loss = torch.nn.functional.cross_entropy(model(batch["x"].flatten(1)), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps, rows = steps + 1, rows + len(batch["y"])
        sums = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for batch in ctx.iter_batches("val", 7):
                bare = model.module if hasattr(model, "module") else model
                loss = torch.nn.functional.cross_entropy(bare(batch["x"].flatten(1)), batch["y"], reduction="sum")
                sums += torch.tensor([loss.item(), len(batch["y"])], dtype=torch.float64)
        val_rows = int(sums[1])
        sums = ctx.all_reduce_sum(sums)
        _write(out / f"stream-rank{ctx.rank}-epoch{epoch}.pt",
               {"steps": steps, "rows": rows, "val_rows": val_rows, "params": params_of(model)})
        ctx.report({"val_loss": (sums[0] / sums[1]).item(), "val_count": sums[1].item(), "epoch": epoch})
