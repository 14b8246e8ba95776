"""Training throughput of the file-backed image task by data source, and a streaming worker's memory.

    python benchmarks/data_ingest.py [--per-class 1000] [--epochs 4] [--workers 1,2] [--rounds 2]
        [--rss-gb 7.5] [--parts throughput,rss] [--out benchmarks/results/data_ingest.json]

Throughput. One image folder (benchmarks/make_image_dataset.py, 32x32 RGB PNGs), one model
(the image_folder task's small ResNet, 8 channels), one batch size and one training loop
(`feed` below, run as a raysweep trial with `run_training`: in-process for one worker, a Ray
Train worker group for two); only where the batches come from differs:

- `ray_data`: the spec's data: section, `cache: none`: Ray Data reads, decodes, resizes and
  normalises the files again every epoch, Ray Train splitting them over the workers;
- `ray_data_cached`: the same section read once into Ray's object store (`cache: memory`);
- `dataloader`: a plain `torch.utils.data.DataLoader` over the same files (PIL decode in
  `--loader-workers` worker processes per rank) through `ctx.prepare_data_loader`;
- `memory`: the decoded images held as one tensor in the worker, sliced by `ctx.shard`.

Samples per second of training (not validation), summed over ranks, over every epoch but
the first (start-up); rounds alternate the order of the sources. Ray runs with one logical
CPU more than the machine has cores, so that a two-worker trial leaves Ray Data a CPU, as
raysweep requires of a streamed search; the DataLoader's processes compete the same way.

Memory. Parquet shards of decoded 64x64 images (`make_image_dataset.py --parquet`, copied
until they reach `--rss-gb`), streamed by every worker of a one- and a two-worker trial
(`cache: none`): each worker's peak resident memory, sampled through the epoch, against the
dataset's size. Goals (issue 15): streaming at least 0.9x the DataLoader's throughput; a
worker's peak RSS under 1.5 GB while it streams a dataset 5x larger.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/common.py, also where trials import this module
from common import command, machine, own_ray, write_json  # noqa: E402

# The trials' task, by a name their processes can import: `data_ingest` when this runs as a
# script (its folder is on the path), `benchmarks.data_ingest` when a test imports it.
MODULE = "data_ingest" if __name__ == "__main__" else __name__
SOURCES = ("ray_data", "ray_data_cached", "dataloader", "memory")
THROUGHPUT_GOAL, RSS_GOAL_MB, RSS_FACTOR_GOAL = 0.9, 1500, 5
BATCH, CHANNELS, MEAN, STD = 64, 8, 0.5, 0.25


# --------------------------------------------------------------------------- trial code


class PngFolder:
    """A map-style torch Dataset over <root>/<class>/*.png, decoded with PIL per item."""

    def __init__(self, root: str):
        self.files = sorted(Path(root).glob("*/*.png"))
        self.classes = sorted({p.parent.name for p in self.files})
        self.index = {c: i for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.files[i]) as image:
            x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy((x.transpose(2, 0, 1) - MEAN) / STD), self.index[self.files[i].parent.name]


def feed(config, ctx):
    """Train the small ResNet on batches from `config["source"]`; report training time and
    samples (epochs after the first summed), and each rank's peak RSS."""
    import torch

    from raysweep.tasks.resnet import small_resnet

    source, root = config["source"], config.get("root")
    torch.manual_seed(ctx.seed)
    if source.startswith("ray_data"):
        info = ctx.data_info
        shape, classes = info["input_shape"], len(info["classes"])
        batches = lambda epoch: ((b["x"], b["y"]) for b in ctx.iter_batches("train", BATCH))  # noqa: E731
    elif source == "dataloader":
        from torch.utils.data import DataLoader

        dataset = PngFolder(f"{root}/train")
        shape, classes = [3, *dataset[0][0].shape[1:]], len(dataset.classes)
        loader = ctx.prepare_data_loader(DataLoader(
            dataset, batch_size=BATCH, shuffle=True, num_workers=config["loader_workers"],
            persistent_workers=config["loader_workers"] > 0))
        batches = lambda epoch: loader  # noqa: E731
    else:  # memory: decoded once, before the first epoch's clock starts
        dataset = PngFolder(f"{root}/train")
        items = [dataset[i] for i in range(len(dataset))]
        x, y = torch.stack([a for a, _ in items]), torch.tensor([b for _, b in items])
        shape, classes = list(x.shape[1:]), len(dataset.classes)

        def batches(epoch):
            order = ctx.shard(len(x), epoch=epoch)
            for i in range(0, len(order), BATCH):
                idx = order[i : i + BATCH]
                yield x[idx], y[idx]

    model = ctx.prepare_model(small_resnet(shape[0], classes, channels=CHANNELS))
    train(ctx, model, torch.optim.AdamW(model.parameters(), lr=1e-3), batches, timed_from=2)


def train(ctx, model, opt, batches, timed_from: int) -> None:
    """The loop every source shares. Reports, summed over ranks: samples and seconds of the
    epochs from `timed_from` on (per rank), and each rank's peak RSS, sampled through the run."""
    import torch

    from common import PeakRSS

    timed = torch.zeros(2, dtype=torch.float64)
    with PeakRSS() as rss:
        for epoch in range(1, ctx.max_epochs + 1):
            started, samples = time.perf_counter(), 0
            for xb, yb in batches(epoch):
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                samples += len(yb)
            if epoch >= timed_from:
                timed += torch.tensor([samples, time.perf_counter() - started], dtype=torch.float64)
            # per rank: RSS at the start, its peak, and the peaks of its private and shared parts
            kinds = ("start_rss_mb", "peak_rss_mb", "peak_private_mb", "peak_shared_mb")
            mem = torch.zeros(len(kinds), ctx.world_size, dtype=torch.float64)
            mem[:, ctx.rank] = torch.tensor([rss.start_mib, max(rss.peak_mib, rss.current_mib()),
                                             rss.peak_private_mib, rss.peak_shared_mib])
            total = ctx.all_reduce_sum(torch.cat([timed, mem.flatten()])).tolist()
            n = ctx.world_size
            ctx.report({"val_loss": loss.item(), "epoch": epoch, "timed_samples": total[0],
                        "timed_rank_s": total[1] / n,
                        **{f"{kind}_rank{r}": total[2 + k * n + r] for k, kind in enumerate(kinds) for r in range(n)}})


# --------------------------------------------------------------------------- driver


def _spec(name: str, source: str, workers: int, epochs: int, root: Path, data: dict | None) -> dict:
    raw = {"name": name, "task": f"{MODULE}:feed", "max_epochs": epochs, "seed": 0,
           "space": {"lr": {"type": "choice", "values": [0.001]}},
           "fixed": {"source": source, "root": str(root), "loader_workers": 1},
           "resources": {"workers_per_trial": workers, "poll_interval_s": 0.5},
           "checkpoint": {"every": 1000}, "tracking": {"enabled": False}}
    if data is not None:
        raw["data"] = data
    return raw


def run_one(raw: dict, tmp: Path) -> dict:
    from rich.console import Console

    from raysweep.spec import validate
    from raysweep.train import run_training, train_params

    spec = validate(raw)
    started = time.perf_counter()
    result = run_training(spec, train_params(spec, {}), storage=str(tmp / "results"), console=Console(quiet=True))
    m = result.metrics
    return {"samples_per_s": m["timed_samples"] / m["timed_rank_s"], "timed_samples": m["timed_samples"],
            "timed_s": m["timed_rank_s"], "wall_s": time.perf_counter() - started,
            **{kind: [v for k, v in sorted(m.items()) if k.startswith(f"{kind}_rank")]
               for kind in ("start_rss_mb", "peak_rss_mb", "peak_private_mb", "peak_shared_mb")}}


def throughput(root: Path, workers: int, epochs: int, rounds: int, tmp: Path) -> dict:
    images = {"train": str(root / "train"), "val": str(root / "val"), "format": "images"}
    runs: dict[str, list] = {s: [] for s in SOURCES}
    for r in range(rounds):
        order = SOURCES if r % 2 == 0 else tuple(reversed(SOURCES))
        for source in order:
            data = {**images, "cache": "memory" if source == "ray_data_cached" else "none"} \
                if source.startswith("ray_data") else None
            run = run_one(_spec(f"ingest-{source}-{workers}-{r}", source, workers, epochs, root, data), tmp)
            runs[source].append(run)
            print(f"  {workers} worker(s), round {r + 1}: {source:16s} {run['samples_per_s']:8.0f} samples/s "
                  f"(wall {run['wall_s']:.0f} s)", flush=True)
    pooled = {s: sum(x["timed_samples"] for x in v) / sum(x["timed_s"] for x in v) for s, v in runs.items()}
    ratio = pooled["ray_data"] / pooled["dataloader"]
    return {"workers": workers, "samples_per_s": pooled, "runs": runs,
            "ray_data_vs_dataloader": ratio, "ray_data_cached_vs_dataloader": pooled["ray_data_cached"] / pooled["dataloader"],
            "ray_data_vs_memory": pooled["ray_data"] / pooled["memory"],
            "round_ratios": [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(runs["ray_data"], runs["dataloader"])]}


def rss(mid, tmp: Path, gb: float, epochs: int, per_class: int = 2000, workers=(1, 2)) -> list[dict]:
    """Stream Parquet shards of decoded images totalling `gb` through one- and two-worker trials."""
    base = tmp / "parquet-base"
    mid.make_dataset(base, per_class, size=64, parquet=True, verbose=False)
    big = tmp / "parquet-big"
    (big / "train").mkdir(parents=True)
    shards, copies = sorted((base / "train").glob("*.parquet")), 0
    while sum(f.stat().st_size for f in (big / "train").glob("*.parquet")) < gb * 1e9:
        for shard in shards:
            shutil.copy(shard, big / "train" / f"copy{copies:03d}-{shard.name}")
        copies += 1
    dataset_mb = sum(f.stat().st_size for f in (big / "train").glob("*.parquet")) / 2**20
    print(f"  streaming {dataset_mb / 1024:.2f} GiB of Parquet ({copies} copies of {len(shards)} shards)", flush=True)
    out = []
    for workers in workers:
        data = {"train": str(big / "train"), "val": str(base / "val"), "format": "parquet", "cache": "none"}
        raw = _spec(f"ingest-rss-{workers}", "ray_data", workers, epochs, big, data)
        raw["checkpoint"] = {"every": 1000}
        raw["task"] = f"{MODULE}:stream_only"
        run = run_one(raw, tmp)
        row = {"workers": workers, "dataset_mb": dataset_mb, "start_rss_mb": run["start_rss_mb"],
               "peak_rss_mb": run["peak_rss_mb"], "peak_private_mb": run["peak_private_mb"],
               "peak_shared_mb": run["peak_shared_mb"],
               "dataset_over_peak_rss": dataset_mb / max(run["peak_rss_mb"]), "samples_per_s": run["samples_per_s"],
               "wall_s": run["wall_s"]}
        print(f"  {workers} worker(s): peak RSS {', '.join(f'{v:.0f}' for v in row['peak_rss_mb'])} MiB per worker "
              f"(at its start {', '.join(f'{v:.0f}' for v in row['start_rss_mb'])}; peaks of its private "
              f"memory {', '.join(f'{v:.0f}' for v in row['peak_private_mb'])} and of the shared memory it "
              f"touched, Ray's object store, {', '.join(f'{v:.0f}' for v in row['peak_shared_mb'])}); "
              f"dataset {row['dataset_over_peak_rss']:.1f}x that", flush=True)
        out.append(row)
    return out


def stream_only(config, ctx):
    """The memory run's trial: a linear model on the streamed rows (the data is measured, not the model)."""
    import torch

    info = ctx.data_info
    torch.manual_seed(ctx.seed)
    model = ctx.prepare_model(torch.nn.Linear(info["input_shape"][0], len(info["classes"])))
    batches = lambda epoch: ((b["x"], b["y"]) for b in ctx.iter_batches("train", 256))  # noqa: E731
    train(ctx, model, torch.optim.SGD(model.parameters(), lr=1e-4), batches, timed_from=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=1000, help="images per class (0.7 of them train)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed")
    p.add_argument("--workers", default="1,2", help="worker counts to measure")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every source, in alternating order")
    p.add_argument("--rss-gb", type=float, default=7.5,
                   help="size of the streamed Parquet dataset (5x a worker's ~1.3 GB peak here)")
    p.add_argument("--rss-workers", default="1,2", help="worker counts of the memory runs")
    p.add_argument("--rss-per-class", type=int, default=2000, help="64x64 images per class in the copied shards")
    p.add_argument("--parts", default="throughput,rss",
                   help="what to measure; a part run alone replaces only its own figures in --out")
    p.add_argument("--out", default=str(HERE / "results" / "data_ingest.json"))
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))

    spec = importlib.util.spec_from_file_location("make_image_dataset", HERE / "make_image_dataset.py")
    mid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mid)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() and parts != {"throughput", "rss"} else {}
    out.update({"machine": machine(), "batch_size": BATCH, "channels": CHANNELS,
                "goals": {"throughput_ratio": THROUGHPUT_GOAL, "peak_rss_mb": RSS_GOAL_MB,
                          "dataset_over_rss": RSS_FACTOR_GOAL}})
    with tempfile.TemporaryDirectory(prefix="raysweep-ingest-") as tmp_name, own_ray(num_cpus=(os.cpu_count() or 2) + 1):
        tmp = Path(tmp_name)
        if "throughput" in parts:
            root = tmp / "images"
            made = mid.make_dataset(root, args.per_class, size=32, verbose=False)
            out["images"] = {"per_class": args.per_class, "train": sum(made["counts"]["train"].values()), "size": 32,
                             "epochs": args.epochs}
            print(f"{out['images']['train']} training images, 32x32, batch {BATCH}", flush=True)
            out["throughput"] = [throughput(root, int(w), args.epochs, args.rounds, tmp) for w in args.workers.split(",")]
            out["throughput_command"] = command("data_ingest.py", argv)
            for row in out["throughput"]:
                sps = row["samples_per_s"]
                print(f"{row['workers']} worker(s): " + ", ".join(f"{s} {sps[s]:.0f}" for s in SOURCES) +
                      f" samples/s; ray_data / dataloader {row['ray_data_vs_dataloader']:.2f}x (goal {THROUGHPUT_GOAL}x)")
        if "rss" in parts:
            out["rss"] = rss(mid, tmp, args.rss_gb, 1, args.rss_per_class,
                             [int(w) for w in args.rss_workers.split(",")])
            out["rss_command"] = command("data_ingest.py", argv)
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
