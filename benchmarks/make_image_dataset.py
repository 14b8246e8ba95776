"""An image-classification dataset rendered from scikit-learn's digits: folders of PNG/JPEG, or Parquet.

    python benchmarks/make_image_dataset.py /tmp/digits_images --per-class 2000
    python benchmarks/make_image_dataset.py OUT_DIR --per-class N [--size 32] [--splits 0.7,0.15,0.15]
        [--seed 0] [--format png|jpeg] [--parquet [--rows-per-shard 4096]] [--force]

Nothing is downloaded: the source is `sklearn.datasets.load_digits()`, 1797 8x8 grey digits in
10 classes, shipped with scikit-learn. Only numpy, Pillow, scikit-learn and pyarrow are used.

How it is built. The 1797 SOURCE digits are first split into train/val/test pools, stratified by
class and seeded (the `--splits` fractions, at least one source digit per split and class), so a
val or test image is always a rendering of a source digit that no train image comes from. Each
split then gets, per class, its share of `--per-class` (the fractions, rounded by largest
remainder so the three splits add up to exactly N, at least one each), rendered from that
split's pool (the pool's digits are cycled through in a shuffled order) by random augmentation:
upscale to S x S and a random affine transform (rotation +-15 degrees, scale 0.85-1.15,
translation up to +-10% of S) sampled in one bilinear step from the 8x8 source, a random stroke
gamma, an occasional slight blur (30% of images), random foreground and background RGB colours
whose luma differs by at least 96/255, and Gaussian pixel noise (sigma 2-12 grey levels).
Every (split, class) has its own random stream, so the output depends only on the arguments
(byte-identical files for the same seed), not on the number of worker processes.

Layouts, under OUT_DIR:

- image folders (default): `{train,val,test}/<class>/<index>.png` (`.jpg` with `--format jpeg`,
  quality 90), `<class>` the digit "0".."9", `<index>` zero-padded from 00000; RGB, S x S.
- `--parquet`: `{train,val,test}/part-00000.parquet, part-00001.parquet, ...`, at most
  `--rows-per-shard` rows each, rows shuffled within the split (seeded). Columns:
    `image`: the decoded pixels, uint8, H x W x 3 (row-major, channels last) flattened into a
             pyarrow `FixedSizeList<uint8>` of length S*S*3;
             `np.asarray(col.values).reshape(-1, S, S, 3)` gives them back (`col` a chunk of
             the column, e.g. `table.column("image").combine_chunks()`);
    `label`: int64, the class index (= the digit).
  The schema metadata key b"raysweep.image_shape" holds the shape as JSON, e.g. b"[32, 32, 3]";
  b"raysweep.classes" holds the class names. The pixels are exactly those the PNG layout
  writes for the same arguments.

Both layouts also get OUT_DIR/dataset.json: classes, size, counts per split and class, seed,
source ("sklearn digits"), splits, format, image_shape, and the source digit indices (into
`load_digits()`) of each split's pool.

OUT_DIR must be empty or absent; `--force` allows a non-empty one, and then removes, before
writing, only the kinds of file this script writes there (`<split>/<class>/*.png|*.jpg`,
`<split>/part-*.parquet`), so a smaller rerun leaves no stale images behind.

Progress goes to stdout: a line per split, then a final line with counts, bytes and seconds.
A bad argument prints one line on stderr naming it and exits 2.

Importable: `make_dataset(...)` does the work and returns the dataset.json content plus
`files`, `bytes` and `seconds`; `split_sources`, `allocate` and `render` are its parts.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
CLASSES = tuple(str(c) for c in range(10))
SHAPE_KEY = b"raysweep.image_shape"
CLASSES_KEY = b"raysweep.classes"
EXTENSIONS = {"png": ".png", "jpeg": ".jpg"}

# Augmentation ranges.
MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.85, 1.15)
MAX_SHIFT = 0.10  # of S
GAMMA_RANGE = (0.7, 1.4)
BLUR_P = 0.3
BLUR_WEIGHT = (0.12, 0.25)  # the 3-tap kernel [w, 1-2w, w], rows then columns
MIN_LUMA_GAP = 96.0
NOISE_SIGMA = (2.0, 12.0)
JPEG_QUALITY = 90
# Images rendered per numpy batch: about 1M pixels, so memory stays small at any S.
BATCH_PIXELS = 1 << 20
# Below this many images in all, worker processes cost more than they save.
PARALLEL_MIN_IMAGES = 2000


class UsageError(ValueError):
    """A bad argument: the CLI prints the message (which names the argument) and exits 2."""


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 source digits: images (float32, 0..1, N x 8 x 8) and labels (int64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def allocate(total: int, fractions) -> list[int]:
    """`total` split by `fractions` (largest remainder, so it adds up exactly), at least 1 each."""
    if total < len(fractions):
        raise ValueError(f"cannot give each of {len(fractions)} parts at least 1 of {total}")
    raw = [total * f for f in fractions]
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        while counts[i] < 1:  # take from the largest part
            j = max(range(len(counts)), key=lambda k: (counts[k], -k))
            counts[j] -= 1
            counts[i] += 1
    return counts


def split_sources(labels: np.ndarray, splits=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, np.ndarray]:
    """Source digit indices per split: stratified by class, seeded, disjoint, sorted."""
    rng = np.random.default_rng([seed, 0])
    pools: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for split, n in zip(SPLITS, allocate(len(idx), splits)):
            pools[split].append(idx[start:start + n])
            start += n
    return {s: np.sort(np.concatenate(parts)) for s, parts in pools.items()}


def _colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB (float32, 0..255) whose luma differs by >= MIN_LUMA_GAP."""
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    fg = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    bg = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    bad = np.abs((fg - bg) @ luma) < MIN_LUMA_GAP
    while bad.any():
        k = int(bad.sum())
        fg[bad] = rng.uniform(0, 255, (k, 3))
        bg[bad] = rng.uniform(0, 255, (k, 3))
        bad = np.abs((fg - bg) @ luma) < MIN_LUMA_GAP
    return fg, bg


def _blur(mask: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Separable 3-tap blur [w, 1-2w, w] with a weight per image (0: unchanged), zero edges."""
    w = weight[:, None, None]
    padded = np.pad(mask, [(0, 0), (1, 1), (0, 0)])
    mask = w * (padded[:, :-2] + padded[:, 2:]) + (1 - 2 * w) * mask
    padded = np.pad(mask, [(0, 0), (0, 0), (1, 1)])
    return w * (padded[:, :, :-2] + padded[:, :, 2:]) + (1 - 2 * w) * mask


def render(sources: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Augmented RGB renderings (uint8, n x S x S x 3) of 8x8 digits (float, 0..1, n x 8 x 8)."""
    n = len(sources)
    s = size
    padded = np.zeros((n, 10, 10), dtype=np.float32)  # one pixel of background round the digit
    padded[:, 1:9, 1:9] = sources
    flat = padded.reshape(n, 100)

    theta = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n)).astype(np.float32)
    scale = rng.uniform(*SCALE_RANGE, n).astype(np.float32)
    shift = (rng.uniform(-MAX_SHIFT, MAX_SHIFT, (2, n)) * s).astype(np.float32)
    gamma = rng.uniform(*GAMMA_RANGE, n).astype(np.float32)
    blur = np.where(rng.random(n) < BLUR_P, rng.uniform(*BLUR_WEIGHT, n), 0.0).astype(np.float32)
    fg, bg = _colours(n, rng)
    sigma = rng.uniform(*NOISE_SIGMA, n).astype(np.float32)

    # Output pixel centres, relative to the image centre; the inverse transform maps them to
    # the upscaled (S x S) digit, then to the 8x8 source (pixel centres at i + 0.5), +1 padding.
    centre = np.arange(s, dtype=np.float32) + 0.5 - s / 2
    dx = centre[None, None, :] - shift[0][:, None, None]
    dy = centre[None, :, None] - shift[1][:, None, None]
    cos = (np.cos(theta) / scale)[:, None, None]
    sin = (np.sin(theta) / scale)[:, None, None]
    to_source = np.float32(8.0 / s)
    xs = (cos * dx + sin * dy + s / 2) * to_source + 0.5
    ys = (cos * dy - sin * dx + s / 2) * to_source + 0.5
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    x0, y0 = x0.astype(np.int32), y0.astype(np.int32)
    # Clipping sends every out-of-range neighbour to the zero border.
    xa, xb = np.clip(x0, 0, 9), np.clip(x0 + 1, 0, 9)
    ya, yb = np.clip(y0, 0, 9) * 10, np.clip(y0 + 1, 0, 9) * 10

    def at(yi, xi):
        return np.take_along_axis(flat, (yi + xi).reshape(n, -1), axis=1).reshape(n, s, s)

    mask = ((1 - fy) * ((1 - fx) * at(ya, xa) + fx * at(ya, xb))
            + fy * ((1 - fx) * at(yb, xa) + fx * at(yb, xb)))
    mask = np.power(np.clip(mask, 0.0, 1.0), gamma[:, None, None])
    mask = _blur(mask, blur)

    image = bg[:, None, None, :] + mask[..., None] * (fg - bg)[:, None, None, :]
    image += rng.standard_normal(image.shape, dtype=np.float32) * sigma[:, None, None, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _chunk_rng(seed: int, split_i: int, cls: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1, split_i, cls])


def render_chunk(images: np.ndarray, pool: np.ndarray, count: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """`count` renderings from the source indices `pool`, cycling through it in shuffled order."""
    rounds = -(-count // len(pool))
    order = np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count]
    batch = max(1, BATCH_PIXELS // (size * size))
    return np.concatenate([render(images[order[i:i + batch]], size, rng) for i in range(0, count, batch)])


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(pixels, "RGB").save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write_chunk(task: tuple, images: np.ndarray, size: int, seed: int, fmt: str) -> tuple[int, int]:
    """Render and write one (split, class) folder; returns (files, bytes)."""
    split_i, cls, pool, count, folder = task
    pixels = render_chunk(images, pool, count, size, _chunk_rng(seed, split_i, cls))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(count - 1)))
    written = 0
    for i in range(count):
        data = _encode(pixels[i], fmt)
        (folder / f"{i:0{width}d}{EXTENSIONS[fmt]}").write_bytes(data)
        written += len(data)
    return count, written


def _worker(tasks, images, size, seed, fmt, results) -> None:
    try:
        for task in tasks:
            results.put(("ok", task[0], _write_chunk(task, images, size, seed, fmt)))
    except BaseException as exc:  # reported to the parent, which raises
        results.put(("error", None, f"{type(exc).__name__}: {exc}"))


def _run_chunks(tasks: list, images, size, seed, fmt, workers: int):
    """Yield (split index, (files, bytes)) per finished chunk, over `workers` forked processes."""
    if workers <= 1:
        for task in tasks:
            yield task[0], _write_chunk(task, images, size, seed, fmt)
        return
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(tasks[w::workers], images, size, seed, fmt, results), daemon=True)
             for w in range(workers)]
    for p in procs:
        p.start()
    try:
        for _ in range(len(tasks)):
            while True:
                try:
                    status, split_i, value = results.get(timeout=1.0)
                    break
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"worker process exited with code {dead[0].exitcode}") from None
            if status == "error":
                raise RuntimeError(f"worker failed: {value}")
            yield split_i, value
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()


def _write_parquet(folder: Path, pixels: np.ndarray, labels: np.ndarray, size: int,
                   rows_per_shard: int) -> tuple[int, int]:
    """Parquet shards of (image, label); returns (files, bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    length = size * size * 3
    schema = pa.schema([pa.field("image", pa.list_(pa.uint8(), length), nullable=False),
                        pa.field("label", pa.int64(), nullable=False)],
                       metadata={SHAPE_KEY: json.dumps([size, size, 3]).encode(),
                                 CLASSES_KEY: json.dumps(list(CLASSES)).encode()})
    files = written = 0
    for shard, start in enumerate(range(0, len(labels), rows_per_shard)):
        part = slice(start, start + rows_per_shard)
        image = pa.FixedSizeListArray.from_arrays(pa.array(pixels[part].reshape(-1)), length)
        table = pa.Table.from_arrays([image, pa.array(labels[part], pa.int64())], schema=schema)
        path = folder / f"part-{shard:05d}.parquet"
        pq.write_table(table, path)
        files += 1
        written += path.stat().st_size
    return files, written


def _check(per_class, size, splits, seed, fmt, rows_per_shard) -> tuple[float, ...]:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(per_class) or per_class < 3:
        raise UsageError(f"--per-class: must be an integer >= 3, got {per_class!r}")
    if not is_int(size) or size < 8:
        raise UsageError(f"--size: must be an integer >= 8, got {size!r}")
    if not is_int(seed) or seed < 0:
        raise UsageError(f"--seed: must be an integer >= 0, got {seed!r}")
    if fmt not in EXTENSIONS:
        raise UsageError(f"--format: must be one of {', '.join(EXTENSIONS)}, got {fmt!r}")
    if not is_int(rows_per_shard) or rows_per_shard < 1:
        raise UsageError(f"--rows-per-shard: must be an integer >= 1, got {rows_per_shard!r}")
    if isinstance(splits, str):
        try:
            splits = tuple(float(p) for p in splits.split(","))
        except ValueError:
            raise UsageError(f"--splits: expected three comma-separated numbers, got {splits!r}") from None
    try:
        splits = tuple(float(f) for f in splits)
    except (TypeError, ValueError):
        raise UsageError(f"--splits: expected three numbers, got {splits!r}") from None
    if len(splits) != 3 or not all(math.isfinite(f) and f > 0 for f in splits):
        raise UsageError(f"--splits: expected three fractions > 0 (train,val,test), got {splits!r}")
    if abs(sum(splits) - 1.0) > 1e-6:
        raise UsageError(f"--splits: the fractions must add up to 1, got {sum(splits):g}")
    return splits


def _prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT_DIR: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"OUT_DIR: {out} is not empty (use --force to write into it)")
        for split in SPLITS:  # only what this script writes, so no stale images stay behind
            for path in (out / split).glob("part-*.parquet"):
                path.unlink()
            for cls in CLASSES:
                for ext in EXTENSIONS.values():
                    for path in (out / split / cls).glob(f"*{ext}"):
                        path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_dataset(out_dir, per_class: int, size: int = 32, splits=(0.7, 0.15, 0.15), seed: int = 0,
                 fmt: str = "png", parquet: bool = False, rows_per_shard: int = 4096, force: bool = False,
                 workers: int | None = None, verbose: bool = True) -> dict:
    """Write the dataset under `out_dir`; return the dataset.json content plus files, bytes, seconds.

    The result's "counts" is {split: {class: images}}; "source_indices" is {split: sorted
    indices into `load_digits()`} of each split's source pool (disjoint between splits).
    `workers`: processes for the image-folder layout (None: up to 2, for 2000 images or more);
    the files do not depend on it. Raises UsageError for a bad argument or a non-empty
    `out_dir` without `force`.
    """
    started = time.perf_counter()
    splits = _check(per_class, size, splits, seed, fmt, rows_per_shard)
    out = Path(out_dir)
    _prepare_out_dir(out, force)
    say = print if verbose else (lambda *a, **k: None)

    images, labels = load_source()
    pools = split_sources(labels, splits, seed)
    per_split = dict(zip(SPLITS, zip(*[allocate(per_class, splits) for _ in CLASSES])))
    counts = {s: {c: int(per_split[s][i]) for i, c in enumerate(CLASSES)} for s in SPLITS}
    totals = {s: sum(counts[s].values()) for s in SPLITS}
    kind = "parquet" if parquet else fmt
    say(f"rendering {sum(totals.values())} images ({per_class} per class, {size}x{size} RGB, {kind}) "
        f"from {len(labels)} sklearn digits into {out}", flush=True)

    files = written = 0
    if parquet:
        for split_i, split in enumerate(SPLITS):
            t0 = time.perf_counter()
            pixels, ys = [], []
            for cls in range(len(CLASSES)):
                pool = pools[split][labels[pools[split]] == cls]
                pixels.append(render_chunk(images, pool, counts[split][CLASSES[cls]], size,
                                           _chunk_rng(seed, split_i, cls)))
                ys.append(np.full(len(pixels[-1]), cls, dtype=np.int64))
            order = np.random.default_rng([seed, 2, split_i]).permutation(totals[split])
            f, b = _write_parquet(out / split, np.concatenate(pixels)[order], np.concatenate(ys)[order],
                                  size, rows_per_shard)
            files, written = files + f, written + b
            say(f"{split}: {totals[split]} images in {f} shard(s), {b / 1e6:.1f} MB, "
                f"{time.perf_counter() - t0:.1f} s", flush=True)
    else:
        tasks = []
        for split_i, split in enumerate(SPLITS):
            for cls in range(len(CLASSES)):
                pool = pools[split][labels[pools[split]] == cls]
                tasks.append((split_i, cls, pool, counts[split][CLASSES[cls]], str(out / split / CLASSES[cls])))
        if workers is None:
            enough = sum(totals.values()) >= PARALLEL_MIN_IMAGES
            workers = min(2, os.cpu_count() or 1) if enough else 1
        if "fork" not in multiprocessing.get_all_start_methods():
            workers = 1
        remaining = [len(CLASSES)] * len(SPLITS)
        done = [[0, 0] for _ in SPLITS]
        t0 = time.perf_counter()
        for split_i, (f, b) in _run_chunks(tasks, images, size, seed, fmt, max(1, int(workers))):
            done[split_i][0] += f
            done[split_i][1] += b
            remaining[split_i] -= 1
            if remaining[split_i] == 0:
                split = SPLITS[split_i]
                say(f"{split}: {done[split_i][0]} images, {done[split_i][1] / 1e6:.1f} MB "
                    f"({time.perf_counter() - t0:.1f} s since start, {workers} process(es))", flush=True)
        files = sum(d[0] for d in done)
        written = sum(d[1] for d in done)

    info = {"classes": list(CLASSES), "size": size, "counts": counts, "seed": seed, "source": "sklearn digits",
            "per_class": per_class, "splits": list(splits), "format": kind, "image_shape": [size, size, 3],
            "source_indices": {s: [int(i) for i in pools[s]] for s in SPLITS}}
    (out / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")
    seconds = time.perf_counter() - started
    say(f"done: {sum(totals.values())} images (train {totals['train']}, val {totals['val']}, "
        f"test {totals['test']}) in {files} files, {written / 1e6:.1f} MB, {seconds:.1f} s -> {out}", flush=True)
    return {**info, "files": files, "bytes": written, "seconds": seconds}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="make_image_dataset.py", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--per-class", type=int, required=True, help="images per class over the three splits (>= 3)")
    parser.add_argument("--size", type=int, default=32, help="side of the square images in pixels (>= 8)")
    parser.add_argument("--splits", default="0.7,0.15,0.15", help="train,val,test fractions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=sorted(EXTENSIONS), default="png", help="image-folder file format")
    parser.add_argument("--parquet", action="store_true", help="Parquet shards of decoded pixels instead of files")
    parser.add_argument("--rows-per-shard", type=int, default=4096)
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        make_dataset(args.out_dir, args.per_class, size=args.size, splits=args.splits, seed=args.seed,
                     fmt=args.format, parquet=args.parquet, rows_per_shard=args.rows_per_shard, force=args.force)
    except UsageError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
