"""Epoch throughput of a raysweep trial against a bare PyTorch script: loop parity.

    python benchmarks/ddp_parity.py [--workers 2] [--epochs 8] [--rounds 3] [--batch-size 64]
        [--channels 16] [--poll-interval 0.05] [--device cpu|cuda] [--out PATH]

`--workers 2` (DDP parity): a 2-worker raysweep trial (Ray Train) against a bare
torch.distributed DDP script. `--workers 1` (loop parity; writes loop_parity.json): a
one-worker raysweep trial (in-process) against a bare PyTorch loop. Both paths train
digits_cnn on processes of one thread each, on the same strided shards, batches, optimizer
and per-epoch validation. Throughput = training samples per epoch (all ranks together) /
epoch time (train + validation), epoch 1 left out as warm-up. raysweep's epoch time is Tune's
`time_this_iter_s`, the wall time between two epochs' reports: it includes everything the
platform adds per epoch (the report to Tune, through Ray Train's controller for a worker
group, and the checkpoint). The loop-only `epoch_time_s` the trial measures is recorded
beside it. `--device cuda` needs as many GPUs as workers. `--channels` widens digits_cnn for
longer epochs on the same data; `--poll-interval` sets Ray Train's poll of the workers
(`resources.poll_interval_s`) for both Ray paths. With one worker, a fourth path runs the
raysweep trial with `scheduler.report: async` (each epoch reported from a thread while the
next trains).

A third path, the reference, runs the bare loop as a plain Ray trial without raysweep: a Tune
function trainable (one worker), or Ray's documented Train-in-Tune pattern (a TorchTrainer per
Tune trial, `TuneReportCallback`; two workers), reporting and checkpointing every epoch as a
raysweep trial does. raysweep / reference is what raysweep itself adds to what Ray costs.

The paths run in `--rounds` rounds, in alternating order (bare, raysweep, reference; then
reference, raysweep, bare; ...), all under one local Ray (idle while the bare script runs): on a shared
2-vCPU machine the bare script alone ran anywhere between 68 and 97 ms an epoch from one run to
the next, more than the difference being measured. The figure pools every round's timed epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from raysweep.search import run_search
from raysweep.spec import validate
from raysweep.tasks.digits import DigitsCNN, digits_splits

from common import command, machine, own_ray, write_json  # benchmarks/common.py, beside this script

GOALS = {1: 0.95, 2: 0.9}  # raysweep / bare, by workers (issue 7's loop parity, issue 3's DDP)


def train_loop(cfg: dict, device: torch.device, epochs: int, rank: int, workers: int, report=None) -> list[float]:
    """The bare training loop: digits_cnn on this rank's strided shard, per-epoch validation;
    each epoch's time. With `workers` > 1 the process group must be up. `report(metrics, model,
    optimizer)`, if given, is called after each epoch, outside its timing."""
    cuda = device.type == "cuda"
    data = digits_splits(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    model = DigitsCNN().build_model(cfg).to(device)
    distributed = workers > 1
    if distributed:  # one worker: a plain loop, no process group, as raysweep's in-process trial
        model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    all_reduce = dist.all_reduce if distributed else (lambda t: t)
    barrier = dist.barrier if distributed else (lambda: None)
    # weight_decay 0 explicitly: AdamW's default (0.01) is not what the raysweep trial gets.
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.0)
    shard = torch.arange(rank, len(data.train[0]), workers)
    x, y = (t[shard].to(device) for t in data.train)
    x_val, y_val = (t.to(device) for t in data.val)
    loss_fn, times = torch.nn.functional.cross_entropy, []
    for epoch in range(1, epochs + 1):
        barrier()
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x)).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(0, len(x), cfg["batch_size"]):
            idx = order[i : i + cfg["batch_size"]]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
        # The global train loss raysweep's loop reduces each epoch: same collectives, same work.
        train_sums = torch.stack([loss_sum.double(), torch.tensor(float(len(x)), dtype=torch.float64, device=device)])
        all_reduce(train_sums)
        model.eval()
        with torch.no_grad():
            out = model(x_val)
            val_sums = torch.stack([loss_fn(out, y_val, reduction="sum").double(),
                                    (out.argmax(dim=1) == y_val).sum().double(),
                                    torch.tensor(float(len(x_val)), dtype=torch.float64, device=device)])
        all_reduce(val_sums)
        val_loss, correct, count = val_sums.tolist()  # read on the host, as raysweep's metrics are
        barrier()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        if report is not None:
            report({"epoch": epoch, "val_loss": val_loss / count, "val_accuracy": correct / count,
                    "epoch_time_s": times[-1]}, model, optimizer)
    return times


def _bare_worker(rank: int, cfg: dict, device_type: str, port: int, epochs: int, out_file: str, workers: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # as raysweep's worker does for cpus_per_worker: 1
    cuda = device_type == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if workers > 1:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=workers)
    times = train_loop(cfg, device, epochs, rank, workers)
    if rank == 0:
        Path(out_file).write_text(json.dumps(times))
    if workers > 1:
        dist.destroy_process_group()


def run_bare(cfg: dict, device: str, epochs: int, tmp: Path, workers: int) -> list[float]:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    out_file = tmp / "bare_times.json"
    # A process per worker, even for one: a fresh interpreter, as a trial's, with one thread.
    mp.spawn(_bare_worker, args=(cfg, device, port, epochs, str(out_file), workers), nprocs=workers)
    return json.loads(out_file.read_text())


def run_raysweep(cfg: dict, device: str, epochs: int, storage: Path, workers: int,
                 report: str = "sync") -> tuple[list[float], list[float]]:
    raw = {
        "name": "ddp-parity", "task": "digits_cnn", "max_epochs": epochs, "seed": cfg["seed"],
        "search": {"num_samples": 1, "max_concurrent": 1}, "scheduler": {"type": "fifo", "report": report},
        # A spec must search something: an lr range too narrow to matter.
        "space": {"lr": {"type": "uniform", "low": cfg["lr"], "high": cfg["lr"] * 1.0001}},
        "fixed": {k: cfg[k] for k in ("batch_size", "channels", "hidden", "dropout")},
        "resources": {"workers_per_trial": workers, "cpus_per_worker": 1, "gpus_per_worker": int(device == "cuda"),
                      "poll_interval_s": cfg["poll_interval_s"]},
        "tracking": {"enabled": False},
    }
    result = run_search(validate(raw), storage=str(storage), console=Console(quiet=True))
    (trial,) = result.trials
    # SearchResult keeps only the last epoch's metrics; Tune's result.json has every report
    # (the trial directory is named by build_tuner's trial_dirname_creator).
    lines = (storage / raw["name"] / f"trial_{trial['trial_id']}" / "result.json").read_text().splitlines()
    reports = sorted((json.loads(line) for line in lines if line.strip()), key=lambda r: r["epoch"])
    return [r["time_this_iter_s"] for r in reports], [r["epoch_time_s"] for r in reports]


def _reference_worker(config: dict) -> None:
    """The bare loop run as Ray runs a trial, without raysweep: a Tune function trainable (one
    worker) or a Ray Train worker (two), reporting every epoch's metrics and rank 0's
    checkpoint (model and optimizer), as a raysweep trial does by default."""
    import ray.train
    import ray.train.torch
    from ray import tune

    from raysweep.context import save_state
    from raysweep.loop import unwrap

    torch.set_num_threads(1)
    if config["workers"] > 1:
        rank, device = ray.train.get_context().get_world_rank(), ray.train.torch.get_device()
        report_fn, checkpoint_cls = ray.train.report, ray.train.Checkpoint
    else:
        rank, device = 0, torch.device("cuda" if config["device"] == "cuda" else "cpu")
        report_fn, checkpoint_cls = tune.report, tune.Checkpoint

    def report(metrics: dict, model, optimizer) -> None:
        if rank != 0:  # every rank reports (Ray Train waits for all); rank 0 saves
            report_fn(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_state({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}, tmp)
            report_fn(metrics, checkpoint=checkpoint_cls.from_directory(tmp))

    train_loop(config["cfg"], device, config["epochs"], rank, config["workers"], report)


def _reference_driver(config: dict) -> None:
    """Ray's documented Train-in-Tune pattern: a TorchTrainer per Tune trial, `TuneReportCallback`."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysweep.distributed import POLL_ENV, _drain_reports, _pin_cluster_address

    # raysweep's settings, none a cost of its own: the poll interval raysweep's trial gets
    # (Ray's default 2 s would hold a 70 ms epoch to one per 2 s), the pinned address lets the
    # group's CPUs be freed, and the drain, after training, keeps Tune from dropping the last
    # epoch's report.
    os.environ[POLL_ENV] = str(config["cfg"]["poll_interval_s"])
    _pin_cluster_address()
    cuda = config["device"] == "cuda"
    TorchTrainer(
        _reference_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=config["workers"], use_gpu=cuda,
                                               resources_per_worker={"CPU": 1, **({"GPU": 1} if cuda else {})}),
        run_config=ray.train.RunConfig(name=f"reference-{tune.get_context().get_trial_id()}",
                                       storage_path=config["storage"], callbacks=[TuneReportCallback()]),
    ).fit()
    _drain_reports()


def run_reference(cfg: dict, device: str, epochs: int, storage: Path, workers: int) -> list[float]:
    """Tune's `time_this_iter_s` of every report of the bare loop run as a plain Ray trial."""
    from ray import cloudpickle, tune
    from ray.tune.logger import JsonLoggerCallback

    # Ray's workers may not have benchmarks/ on their path: this module's functions go by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    times: list[float] = []

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            times.append(result["time_this_iter_s"])

    if workers > 1:  # the trial only drives the worker group, which holds the CPUs (as raysweep's)
        trainable = tune.with_resources(_reference_driver, tune.PlacementGroupFactory([{"CPU": 0, "memory": 1}]))
    else:
        trainable = tune.with_resources(_reference_worker, {"cpu": 1, "gpu": int(device == "cuda")})
    config = {"cfg": cfg, "epochs": epochs, "workers": workers, "device": device, "storage": str(storage)}
    # Tune's JSON logger, on by default in plain Ray (raysweep, imported here, turns the
    # default loggers off; without it Tune warns that the trial has no result.json).
    callbacks = [Collect(), JsonLoggerCallback()]
    tune.Tuner(trainable, param_space=config,
               run_config=tune.RunConfig(name="reference", storage_path=str(storage), callbacks=callbacks,
                                         verbose=0)).fit()
    return times


def summarise(path: str, runs: list[list[float]], samples: int) -> dict:
    """Throughput pooled over runs (epoch times per run), each run's epoch 1 left out."""
    timed = [t for times in runs for t in times[1:]]  # epoch 1: imports, DDP bucket setup, allocator warm-up
    # Total samples over total time, not a mean of per-epoch rates: Tune sees Ray Train's
    # reports when its controller collects them, so single intervals bunch up, their sum doesn't.
    return {"path": path, "epoch_times_s": runs, "epochs_timed": len(timed), "samples_per_s": samples * len(timed) / sum(timed)}


def run_rounds(cfg: dict, args, tmp: Path, workers: int) -> dict[str, list]:
    """Epoch times of every round, one list per run: bare, raysweep (wall and loop only), with
    one worker raysweep with `scheduler.report: async`, and the reference (the bare loop as a
    plain Ray trial)."""
    runs: dict[str, list] = {"bare": [], "raysweep": [], "loop": [], "async": [], "reference": []}
    for r in range(args.rounds):
        order = ("bare", "raysweep", *(("async",) if workers == 1 else ()), "reference")
        for path in order if r % 2 == 0 else order[::-1]:
            if path == "bare":
                runs["bare"].append(run_bare(cfg, args.device, args.epochs, tmp, workers))
            elif path == "raysweep":
                wall, loop = run_raysweep(cfg, args.device, args.epochs, tmp / f"results-{r}", workers)
                runs["raysweep"].append(wall)
                runs["loop"].append(loop)
            elif path == "async":
                wall, _ = run_raysweep(cfg, args.device, args.epochs, tmp / f"async-{r}", workers, report="async")
                runs["async"].append(wall)
            else:
                runs["reference"].append(run_reference(cfg, args.device, args.epochs, tmp / f"reference-{r}", workers))
        bare = rate(runs["bare"][-1])
        async_ = f"async reports / bare {rate(runs['async'][-1]) / bare:.2f}x, " if runs["async"] else ""
        print(f"round {r + 1}/{args.rounds}: raysweep / bare {rate(runs['raysweep'][-1]) / bare:.2f}x, {async_}"
              f"plain Ray / bare {rate(runs['reference'][-1]) / bare:.2f}x", flush=True)
    return runs


def rate(times: list[float]) -> float:
    """Epochs per second of one run, epoch 1 left out."""
    return len(times[1:]) / sum(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, choices=(1, 2), default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each path, in alternating order")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16,
                        help="digits_cnn's width (16): a wider model makes longer epochs on the same data")
    parser.add_argument("--poll-interval", type=float, default=0.05,
                        help="Ray Train's poll of the workers, s (0.05, raysweep's default): both Ray paths")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", help="default: benchmarks/results/ddp_parity.json (2 workers), loop_parity.json (1)")
    args = parser.parse_args(argv)
    workers, goal = args.workers, GOALS[args.workers]
    suffix = "" if args.channels == 16 else f"_c{args.channels}"  # non-default settings name the file
    suffix += "" if args.poll_interval == 0.05 else f"_poll{args.poll_interval:g}"
    out_path = args.out or f"benchmarks/results/{'ddp' if workers > 1 else 'loop'}_parity{suffix}.json"
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is warm-up")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.poll_interval <= 0:
        parser.error("--poll-interval must be above 0")
    if args.channels < 1:
        parser.error("--channels must be at least 1")
    cfg = {"seed": 0, "lr": 1e-3, "batch_size": args.batch_size, "channels": args.channels, "hidden": 64, "dropout": 0.0,
           "poll_interval_s": args.poll_interval}
    samples = len(digits_splits(cfg["seed"]).train[0])

    # As the tests' Ray: 4 logical CPUs, dashboard on (Train V2 frees trials' resources through it).
    with tempfile.TemporaryDirectory() as tmp, own_ray(num_cpus=4):
        runs = run_rounds(cfg, args, Path(tmp), workers)
    bare = summarise("bare torch.distributed" if workers > 1 else "bare PyTorch loop", runs["bare"], samples)
    ours = summarise("raysweep (Ray Train)" if workers > 1 else "raysweep (in-process)", runs["raysweep"], samples)
    ours["loop_only"] = summarise("raysweep loop only", runs["loop"], samples)
    reference = summarise("plain Ray Train in Tune" if workers > 1 else "plain Tune trial", runs["reference"], samples)
    round_ratios = [rate(w) / rate(b) for w, b in zip(runs["raysweep"], runs["bare"])]
    # One worker: the same trial reporting each epoch from a thread while the next trains.
    async_ = summarise("raysweep, async reports", runs["async"], samples) if runs["async"] else None

    ratio = ours["samples_per_s"] / bare["samples_per_s"]
    print(f"\n{'path':<24} {'epochs timed':>12} {'samples/s':>10} {'vs bare':>8}")
    for row in (bare, ours, *([async_] if async_ else []), reference):
        print(f"{row['path']:<24} {row['epochs_timed']:>12} {row['samples_per_s']:>10.0f} "
              f"{row['samples_per_s'] / bare['samples_per_s']:>7.2f}x")
    loop_ratio = ours["loop_only"]["samples_per_s"] / bare["samples_per_s"]
    reference_ratio = ours["samples_per_s"] / reference["samples_per_s"]
    epoch_ms = {name: 1000 * samples / row["samples_per_s"] for name, row in
                (("bare", bare), ("raysweep", ours), ("loop", ours["loop_only"]))}
    # Per epoch, what raysweep's trial adds to the bare epoch: a slower loop (CPU shared with
    # Ray's processes) and the report + checkpoint between two epochs' loops.
    added = {"total": epoch_ms["raysweep"] - epoch_ms["bare"], "loop": epoch_ms["loop"] - epoch_ms["bare"],
             "report_and_checkpoint": epoch_ms["raysweep"] - epoch_ms["loop"]}
    print(f"(epoch: bare {epoch_ms['bare']:.0f} ms, raysweep {epoch_ms['raysweep']:.0f} ms: +{added['loop']:.1f} ms "
          f"in the loop, +{added['report_and_checkpoint']:.1f} ms report and checkpoint)")
    print(f"(raysweep's training loop alone, without report and checkpoint: {loop_ratio:.2f}x; "
          f"raysweep / the same loop as a plain Ray trial: {reference_ratio:.2f}x)")
    print(f"\nraysweep / bare: {ratio:.2f}x (goal >= {goal}x; rounds {min(round_ratios):.2f}x to "
          f"{max(round_ratios):.2f}x) on {args.device}, {workers} worker(s), {samples} training samples "
          f"per epoch, batch size {args.batch_size}, digits_cnn channels {args.channels}, "
          f"Ray Train poll every {args.poll_interval:g} s")
    out = {
        "machine": machine(**({"gpu": torch.cuda.get_device_name(0)} if args.device == "cuda" else {})),
        "command": command("ddp_parity.py", argv),
        "device": args.device, "workers": workers, "config": cfg, "train_samples_per_epoch": samples,
        "rounds": args.rounds, "rows": [bare, ours, reference], "ratio": ratio, "round_ratios": round_ratios,
        "epoch_ms": epoch_ms, "added_ms_per_epoch": added, "loop_only_ratio": loop_ratio, "vs_plain_ray_ratio": reference_ratio, "goal_ratio": goal,
        "meets_goal": ratio >= goal,
    }
    if async_:
        out["async"] = {**async_, "ratio": async_["samples_per_s"] / bare["samples_per_s"],
                        "round_ratios": [rate(a) / rate(b) for a, b in zip(runs["async"], runs["bare"])]}
        out["async"]["meets_goal"] = out["async"]["ratio"] >= goal
        print(f"raysweep with scheduler.report: async / bare: {out['async']['ratio']:.2f}x")
    write_json(out_path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
