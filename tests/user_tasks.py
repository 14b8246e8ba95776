"""User tasks the tests name by import path ("tests.user_tasks:...")."""

from raysweep.tasks.digits import DigitsMLP


def missing_metric(config, ctx):
    """Reports a metric other than the spec's: the trial must fail with a clear reason."""
    for epoch in range(1, ctx.max_epochs + 1):
        ctx.report({"loss": 1.0 / epoch, "epoch": epoch})


class Quadratic:
    """A class task with no torch at all: the metric is a known function of the config."""

    def train(self, config, ctx):
        for epoch in range(1, ctx.max_epochs + 1):
            ctx.report({"val_loss": (config["x"] - 0.3) ** 2 + 1.0 / epoch})


def _write(path, obj):
    """Save `obj` where the test reads it (atomically: a reader never sees half a file)."""
    import os

    import torch

    torch.save(obj, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def ddp_sync(config, ctx):
    """One epoch of the same model twice per rank, with and without DDP's gradient averaging;
    each rank saves both results for the test to compare across ranks."""
    import copy
    from pathlib import Path

    import torch

    from raysweep.loop import unwrap
    from raysweep.tasks.digits import DigitsMLP, digits_splits

    torch.manual_seed(ctx.seed)
    bare = DigitsMLP().build_model({"hidden": 16})
    synced = ctx.prepare_model(copy.deepcopy(bare))  # DDP: gradients averaged over ranks
    x, y = digits_splits(ctx.seed).train
    shard = ctx.shard(len(x))
    x, y = x[shard], y[shard]  # each rank its own, different samples
    for model in (synced, bare):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for i in range(0, len(x), 32):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    states = {name: unwrap(m).state_dict() for name, m in (("synced", synced), ("bare", bare))}
    _write(Path(config["out_dir"]) / f"rank{ctx.rank}.pt", states)
    ctx.report({"val_loss": float(loss), "epoch": 1})


class KillOnce:
    """digits_mlp whose rank-1 worker (`kill_rank`) SIGKILLs itself once, after epoch
    `kill_epoch`'s report and checkpoint, while rank 0 waits for it in the next epoch. The
    restarted group records where it resumed.

    It waits 5 s before dying: Ray Train registers a reported checkpoint when its controller
    next polls the workers (every 0.05 s under raysweep, 2 s by Ray's default; 5 s leaves a
    busy CI machine room), and a worker that dies sooner loses that checkpoint."""

    def train(self, config, ctx):
        import os
        import signal
        import time
        from pathlib import Path

        from raysweep.tasks.digits import DigitsMLP

        out = Path(config["out_dir"])
        state = ctx.resume_state
        _write(out / f"start-rank{ctx.rank}-{os.getpid()}.pt", {"resumed_epoch": state and state["epoch"]})
        real_report = ctx.report

        def report(metrics, checkpoint=None):
            real_report(metrics, checkpoint=checkpoint)
            if ctx.rank == config.get("kill_rank", 1) and metrics["epoch"] == config["kill_epoch"] \
                    and not (out / "killed").exists():
                (out / "killed").touch()
                time.sleep(5)
                os.kill(os.getpid(), signal.SIGKILL)

        ctx.report = report
        DigitsMLP().train(config, ctx)

    def evaluate(self, config, state, seed):  # test metrics of the best checkpoint, as digits_mlp's
        from raysweep.tasks.digits import DigitsMLP

        return DigitsMLP().evaluate(config, state, seed)


def ray_train_loop(config):
    """A plain Ray Train loop, as in Ray's docs: no raysweep imports at all."""
    import os
    import tempfile

    import ray.train
    import ray.train.torch
    import torch
    from sklearn.datasets import load_digits

    ctx = ray.train.get_context()
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    x_train, y_train = x_train[rank::world], y_train[rank::world]
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)))
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    for epoch in range(1, config["epochs"] + 1):
        for i in range(0, len(x_train), 64):
            loss = torch.nn.functional.cross_entropy(model(x_train[i : i + 64]), y_train[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = model(x_val)
            metrics = {
                "val_loss": torch.nn.functional.cross_entropy(out, y_val).item(),
                "val_accuracy": (out.argmax(1) == y_val).float().mean().item(),
                # What Ray Train's controller was told to poll at (the test's probe, not Ray's docs).
                "ray_train_poll_s": float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "nan")),
            }
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save({"model": model.module.state_dict() if world > 1 else model.state_dict()}, f"{tmp}/model.pt")
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


class NodeProbe:
    """digits_mlp that records which Ray node each rank ran on."""

    def train(self, config, ctx):
        from pathlib import Path

        import ray

        from raysweep.tasks.digits import DigitsMLP

        node = ray.get_runtime_context().get_node_id()
        _write(Path(config["out_dir"]) / f"node-rank{ctx.rank}.pt", {"node": node})
        DigitsMLP().train(config, ctx)


def three_args(config, ctx, extra):
    """Neither a task nor a Ray Train loop: resolving it must say so."""


def _record_start(config, ctx):
    """One file per start of a trial's task (per rank): how often a trial was (re)started."""
    import uuid
    from pathlib import Path

    (Path(config["out_dir"]) / f"start-{config['lr']!r}-rank{ctx.rank}-{uuid.uuid4().hex}").touch()


def starts(out_dir, lr):
    """How many times the task of the trial with this lr started (summed over ranks)."""
    from pathlib import Path

    return len(list(Path(out_dir).glob(f"start-{lr!r}-rank*")))


class DivergesAfter:
    """digits_mlp whose loss becomes NaN from epoch `nan_epoch` when lr > `diverge_above`, as a
    diverging run's does: NaN gradients, then NaN weights and losses. A run resumed from a
    checkpoint diverges at the same epoch again."""

    def train(self, config, ctx):
        import math

        import torch
        from raysweep.tasks.digits import DigitsMLP

        _record_start(config, ctx)
        diverges = config["lr"] > config["diverge_above"]
        training = {"epoch": int((ctx.resume_state or {}).get("epoch", 0)) + 1}

        def loss_fn(out, y, reduction="mean"):
            loss = torch.nn.functional.cross_entropy(out, y, reduction=reduction)
            return loss * math.nan if diverges and training["epoch"] >= config["nan_epoch"] else loss

        real_report = ctx.report

        def report(metrics, checkpoint=None):
            real_report(metrics, checkpoint=checkpoint)
            training["epoch"] = metrics["epoch"] + 1

        ctx.report = report
        task = DigitsMLP()
        task.loss_fn = loss_fn
        task.train(config, ctx)


def _read_shard(config):
    raise ValueError(f"shard of lr={config['lr']:.3g} is corrupt")


def raises_for_some(config, ctx):
    """Reports epoch 1, then fails as `config["fail"]` says: a ValueError raised in a helper, or
    CUDA running out of memory (raised by hand: no GPU here)."""
    _record_start(config, ctx)
    ctx.report({"val_loss": config["lr"], "epoch": 1})
    if config["fail"] == "value_error":
        _read_shard(config)
    if config["fail"] == "oom":
        import torch

        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB"
        )
    for epoch in range(2, ctx.max_epochs + 1):
        ctx.report({"val_loss": config["lr"] / epoch, "epoch": epoch})


def first_finishes(config, ctx):
    """The first trial to start reports every epoch; each later one raises a second after it starts."""
    import os
    import time
    from pathlib import Path

    try:
        os.close(os.open(Path(config["out_dir"]) / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        time.sleep(1)  # so the first trial's epochs arrive before the failures
        raise RuntimeError(f"no data for lr={config['lr']:.3g}") from None
    for epoch in range(1, ctx.max_epochs + 1):
        ctx.report({"val_loss": config["lr"] + 1.0 / epoch, "epoch": epoch})


class SlowDigits:
    """digits_mlp that sleeps `epoch_sleep_s` after each epoch's report: a search slow enough
    for a test to kill its driver mid-way."""

    def train(self, config, ctx):
        import time

        from raysweep.tasks.digits import DigitsMLP

        real_report = ctx.report

        def report(metrics, checkpoint=None):
            real_report(metrics, checkpoint=checkpoint)
            time.sleep(config["epoch_sleep_s"])

        ctx.report = report
        DigitsMLP().train(config, ctx)

    def evaluate(self, config, state, seed):
        from raysweep.tasks.digits import DigitsMLP

        return DigitsMLP().evaluate(config, state, seed)


class FailsAtTest:
    """digits_mlp whose test evaluation raises while the file `config["fail_flag"]` exists:
    a search that fails after its trials ran, then finishes with --resume once it is gone."""

    def train(self, config, ctx):
        from raysweep.tasks.digits import DigitsMLP

        DigitsMLP().train(config, ctx)

    def evaluate(self, config, state, seed):
        from pathlib import Path

        from raysweep.tasks.digits import DigitsMLP

        if Path(config["fail_flag"]).exists():
            raise OSError(f"test data unreadable ({config['fail_flag']})")
        return DigitsMLP().evaluate(config, state, seed)


def ray_train_loop_wrong_metric(config):
    """A plain Ray Train loop that reports `loss`, never the spec's `val_loss`."""
    import ray.train

    for epoch in range(1, config["epochs"] + 1):
        ray.train.report({"loss": 1.0 / epoch})


def one_bad_metric_name(config, ctx):
    """digits_mlp whose first trial to start (the one that creates `config["claim"]`) also
    reports a metric named `a//b`, a name MLflow refuses: that trial fails, the others don't."""
    import os

    from raysweep.tasks.digits import DigitsMLP

    try:
        os.close(os.open(config["claim"], os.O_CREAT | os.O_EXCL))
        bad = True
    except FileExistsError:
        bad = False
    real_report = ctx.report

    def report(metrics, checkpoint=None):
        real_report({**metrics, **({"a//b": 1.0} if bad else {})}, checkpoint=checkpoint)

    ctx.report = report
    DigitsMLP().train(config, ctx)


class CountsReports(DigitsMLP):
    """digits_mlp that notes every epoch it trains (each `ctx.report` call, before the report
    leaves) in `config["out_dir"]`, one file per trial (by its lr), and reports `loads`: how
    often the trial loaded the digits itself (never, when the driver shares its splits). Each
    process it trains in writes its working directory there too (`working_dirs`)."""

    def train(self, config, ctx):
        import os
        from pathlib import Path

        from raysweep.tasks.digits import digits_splits

        Path(config["out_dir"], f"cwd-{os.getpid()}").write_text(os.getcwd())
        out, real_report, before = Path(config["out_dir"]) / f"reports-{config['lr']!r}", ctx.report, _calls(digits_splits)

        def report(metrics, checkpoint=None):
            with out.open("a") as f:
                f.write("trained\n")
            real_report({**metrics, "loads": float(_calls(digits_splits) - before)}, checkpoint=checkpoint)

        ctx.report = report
        super().train(config, ctx)


def working_dirs(out_dir) -> set[str]:
    from pathlib import Path

    return {path.read_text() for path in Path(out_dir).glob("cwd-*")}


def _calls(cached) -> int:
    info = cached.cache_info()
    return info.hits + info.misses


def reports_trained(out_dir, lr):
    from pathlib import Path

    path = Path(out_dir) / f"reports-{lr!r}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def process_probe(config, ctx):
    """Writes what the trial's process holds of Tune's variables and its runtime env."""
    import json
    import os
    from pathlib import Path

    import ray

    names = ("PL_DISABLE_FORK", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS")
    Path(config["out_dir"], f"{os.getpid()}-{config['x']}.json").write_text(json.dumps({
        "runtime_env_vars": dict(ray.get_runtime_context().runtime_env.get("env_vars") or {}),
        "environ": {name: os.environ.get(name) for name in names}}))
    ctx.report({"val_loss": config["x"]})


def odd_habits(config, ctx):
    """digits_mlp reporting as user code often does: its loss a 0-d tensor, the spec's metric a
    NumPy float32; and, where `config["exit"]`, calling sys.exit(3) after epoch 1's report."""
    import sys

    import numpy as np
    import torch

    real_report = ctx.report

    def report(metrics, checkpoint=None):
        if config["exit"] and metrics["epoch"] == 2:
            sys.exit(3)
        real_report({**metrics, "val_loss": np.float32(metrics["val_loss"]),
                     "train_loss": torch.tensor(metrics["train_loss"])}, checkpoint=checkpoint)

    ctx.report = report
    DigitsMLP().train(config, ctx)
