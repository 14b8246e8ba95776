"""The spec's `data:` section through Ray Data: read files, preprocess, stream to trials.

Preprocessing runs in Ray Data's tasks, never in the training loop: images are decoded,
resized and normalised per channel; tabular features are gathered into one vector and
standardised per feature; both with the train split's statistics (one pass over it), and
labels become class indices. Every split arrives as rows `{"x": float32, "y": int64}`.

Read once or per trial (`data.cache`): when the preprocessed splits take at most half of
Ray's object store they are read, preprocessed and materialised once per search, before
the first trial, and every trial streams blocks from memory; otherwise each trial (and
each epoch) streams from the files again, through the same preprocessing. A `--resume`
reads them again. A trial's workers stream their shard: Ray Train splits "train" into
equal row counts per worker (`streaming_split(equal=True)`, which drops at most
world_size - 1 rows an epoch), so every rank runs the same number of steps. The next epoch's
stream starts while this one's last shuffled rows train (docs/design.md, point 19).

Imports no torch: Ray Data's task processes load this module (a test pins it).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np

from .files import SPLITS, check_data, list_split
from .seeds import epoch_seed
from .errors import DataError, SpecError
from .failures import data_error
from .spec import DataSection

CACHE_FRACTION = 0.5  # of the object store, at most, for data read once per search
# Blocks of data streamed from files. A fresh process streaming 2.9 GB of 64x64 images
# (float32 after preprocessing) through a 2,048-row shuffle buffer peaked at 1.7 GB RSS with
# Ray Data's default 128 MiB blocks (the blocks that buffered rows point into stay mapped),
# at 1.1 GB with 16 MiB blocks, and at 0.64 GB with no buffer.
STREAM_BLOCK_BYTES = 16 * 2**20
# Object store a one-process streaming execution may fill ahead of its consumer
# (TrialData.local_dataset). Ray maps the whole store
# into every worker, and each store page a worker reads stays in its RSS (as shared memory):
# with Ray Data's default budget (a share of the whole store) blocks spread over gigabytes
# of it, and a one-worker trial streaming 7 GB reached 2.1 GB RSS, 0.6-0.7 GB of it store
# pages. A small budget keeps the blocks in flight, so the pages reused, few.
STREAM_STORE_BYTES = 512 * 2**20
# Rows per preprocessing batch: a whole block at once (one 62 MB Parquet file of 64x64 images)
# took a Ray Data task to 2.5 GB as float32 and float64 copies.
MAP_BATCH_ROWS = 1024
# Files per block of an image split's paths, so that a split of 7,000 images streams as 14
# blocks that Ray Data's tasks read and decode in parallel (_file_paths).
IMAGE_BLOCK_FILES = 512
IMAGE_DECODE_ROWS = 256  # images per decoding batch: 38 MB of uint8 at 224x224 RGB
# Ray Data's read and preprocessing tasks run in worker processes of their own (a distinct
# runtime env is a distinct worker pool). Ray reuses idle workers for trial actors, and an
# idle worker that had preprocessed 62 MB Parquet files kept 5.6 GB resident: a one-worker
# trial started in it measured 2.2 GB peak RSS while streaming, against 1.35 GB in a fresh one.
# Merged with a job's own runtime env (working_dir, pip), not replacing it.
DATA_TASKS = {"runtime_env": {"env_vars": {"RAYSWEEP_DATA_TASK": "1"}}}
# Longest wait for Ray's resource view to show a free CPU before a read (_materialize).
FREE_CPU_WAIT_S = 2.0


@dataclass
class TrialData:
    """What a trial gets of the data: its description and the Ray Datasets of each split.

    The datasets travel to in-process trials; Ray Train workers get a copy without them and
    stream through `ray.train.get_dataset_shard` (distributed.py).
    """

    info: dict
    datasets: dict[str, Any] | None
    shuffle_buffer: int = 0
    _ahead: _NextEpoch | None = field(default=None, repr=False, compare=False)  # in a worker only

    def for_workers(self) -> TrialData:
        return replace(self, datasets=None, _ahead=None)

    def __getstate__(self) -> dict:
        # The next epoch's prefetch (a generator) is this process's own: a TrialData that has
        # streamed here (a benchmark's in-process trials) still travels to the next trial.
        return {**self.__dict__, "_ahead": None}

    def local_dataset(self, split: str):
        """A split streamed by this process itself (a one-worker trial, the driver's test
        metrics): streamed from files, with the object-store budget `STREAM_STORE_BYTES`.
        Not on Ray Train's path: there `streaming_split` must hold one rank's share while the
        other catches up, and with that budget a two-worker trial deadlocked (a rank waited
        30 minutes in an all-reduce for the other, which got no blocks)."""
        ds = self.datasets[split]
        if not self.info.get("cached"):
            options = ds.context.execution_options  # this process's copy of the dataset's context
            options.resource_limits = options.resource_limits.copy(object_store_memory=STREAM_STORE_BYTES)
        return ds

    def iter_batches(self, split: str, batch_size: int, *, device, rank: int, world_size: int, seed: int,
                     epoch: int, iterator: Callable[[str], Any], last_epoch: bool = True) -> Iterator[dict]:
        """Torch batches of a split for one worker (context.TrainContext.iter_batches).

        "train" goes through `_RowPool`: once this epoch's stream has run dry, and unless
        `last_epoch`, the next epoch's stream starts in the background (`_NextEpoch`) while the
        pooled rows train, so that a new epoch does not begin by waiting for its first
        `shuffle_buffer` rows to be read and preprocessed.
        """
        import torch

        if split not in self.info["splits"]:
            raise KeyError(f"iter_batches: the spec's data: section has no {split!r} split "
                           f"(it has {', '.join(self.info['splits'])})")
        cuda = getattr(device, "type", str(device)) == "cuda"
        if split == "train":
            yield from self._train_batches(batch_size, device, cuda, rank, seed, epoch, iterator, last_epoch)
            return
        kwargs: dict[str, Any] = {"batch_size": batch_size, "device": device, "drop_last": False,
                                  "dtypes": {"x": torch.float32, "y": torch.int64}, "pin_memory": cuda}
        batches = iterator(split).iter_torch_batches(**kwargs)
        if world_size == 1:
            yield from batches
            return
        # val / test reach every worker whole: each evaluates every world_size-th batch, so
        # every row counts once over the workers.
        for i, batch in enumerate(batches):
            if i % world_size == rank:
                yield batch

    def _train_batches(self, batch_size, device, cuda, rank, seed, epoch, iterator, last_epoch) -> Iterator[dict]:
        import torch

        def stream(e: int) -> tuple[Iterator[dict], _RowPool]:
            # Reseeded every epoch (and per rank): a new order each epoch, the same after a restart.
            rng = np.random.default_rng(epoch_seed(seed, e) * 1_009 + rank) if self.shuffle_buffer else None
            # iter(): Ray's iter_batches is an iterable that starts a new pass whenever iterated
            blocks = iter(iterator("train").iter_batches(batch_size=None, batch_format="numpy"))
            return blocks, _RowPool(max(self.shuffle_buffer, batch_size) if rng else 0, rng)

        ahead, self._ahead = self._ahead, None
        blocks, pool = ahead.take() if ahead is not None and ahead.epoch == epoch else stream(epoch)

        def batch(rows: dict[str, np.ndarray]) -> dict:
            x, y = torch.from_numpy(rows["x"]).float(), torch.from_numpy(rows["y"]).long()
            if cuda:
                x, y = x.pin_memory(), y.pin_memory()
            return {"x": x.to(device, non_blocking=cuda), "y": y.to(device, non_blocking=cuda)}

        for block in itertools.chain([None], blocks):  # None: the rows a _NextEpoch pooled come first
            if block is not None:
                pool.add(block)
            while pool.ready(batch_size):
                yield batch(pool.take(batch_size))
        if not last_epoch:
            self._ahead = _NextEpoch(epoch + 1, *stream(epoch + 1))
        while pool.rows:
            yield batch(pool.take(batch_size))

    def batches(self, split: str, batch_size: int = 4096) -> Iterator[tuple[Any, Any]]:
        """(x, y) torch batches of a whole split, here in the driver (test metrics)."""
        for batch in self.iter_batches(split, batch_size, device="cpu", rank=0, world_size=1, seed=0, epoch=0,
                                       iterator=self.local_dataset):
            yield batch["x"], batch["y"]

    def example(self, n: int = 5) -> np.ndarray:
        """A few preprocessed inputs (MLflow's input example for a logged model), copied out of
        Ray's object store: a command logs the model once it has shut Ray down
        (runsetup.RunSetup.ray_done)."""
        split = "test" if "test" in self.datasets else "val"
        return np.array(self.datasets[split].take_batch(n, batch_format="numpy")["x"], copy=True)


class _RowPool:
    """A training stream's rows waiting to be batched: drawn at random once `size` rows wait
    (as Ray Data's local shuffle buffer draws them), in order when `size` is 0.

    raysweep's own because Ray Data's cannot say when its stream has run dry, which is when the
    next epoch's stream may start (TrialData.iter_batches). A row taken is replaced by one from
    the end, so a batch costs its own rows, not a copy of the pool.
    """

    def __init__(self, size: int, rng: np.random.Generator | None):
        self.size, self.rng, self.rows = size, rng, 0
        self.cols: dict[str, np.ndarray] = {}

    def add(self, block: dict[str, np.ndarray]) -> None:
        n = len(block["y"])
        for name, values in block.items():
            col = self.cols.get(name)
            if col is None or len(col) < self.rows + n:
                # Room for one more block of this size, no more: the pool is sized by
                # `shuffle_buffer`, and a doubled pool of 64x64 images would be 230 MB.
                grown = np.empty((max(self.rows, self.size) + 2 * n, *values.shape[1:]), values.dtype)
                if col is not None:
                    grown[: self.rows] = col[: self.rows]
                self.cols[name] = col = grown
            col[self.rows : self.rows + n] = values
        self.rows += n

    def ready(self, batch_size: int) -> bool:
        return self.rows >= self.size + batch_size

    def take(self, k: int) -> dict[str, np.ndarray]:
        k, n = min(k, self.rows), self.rows
        if self.rng is None:
            out = {name: col[:k].copy() for name, col in self.cols.items()}
            for col in self.cols.values():
                col[: n - k] = col[k:n]
        else:
            taken = self.rng.choice(n, k, replace=False)
            out = {name: col[taken] for name, col in self.cols.items()}
            holes = taken[taken < n - k]
            tail = np.arange(n - k, n)
            movers = tail[~np.isin(tail, taken)]
            for col in self.cols.values():
                col[holes] = col[movers]
        self.rows = n - k
        return out


class _NextEpoch:
    """The next epoch's stream, begun in a thread while this epoch's pooled rows train: it
    pools its first rows (through the split's barrier, on Ray Train), then waits to be taken."""

    def __init__(self, epoch: int, blocks: Iterator[dict], pool: _RowPool):
        self.epoch, self.blocks, self.pool = epoch, blocks, pool
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._fill, name=f"raysweep-epoch-{epoch}", daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        try:
            for block in self.blocks:
                self.pool.add(block)
                if self.pool.rows >= self.pool.size:
                    return
        except BaseException as e:  # raised again in the training thread, by take()
            self.error = e

    def take(self) -> tuple[Iterator[dict], _RowPool]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.blocks, self.pool


# --------------------------------------------------------------------------- reading


def _read(section: DataSection, split: str, info: dict):
    """The split's raw rows, and the filesystem its files are on.

    Images and Parquet files are read inside the first map task (`_file_paths`), so that
    reading and preprocessing are one Ray Data operator. As two, a two-worker trial streaming
    7 GB of Parquet with one CPU left to Ray Data stalled for good: the read operator held that
    CPU's reservation with 3 GiB of output queued, and the preprocessing operator after it was
    allotted none (docs/performance.md, Data ingest). CSV and JSON lines keep Ray Data's readers.
    """
    import ray.data

    s = list_split(f"data.{split}", getattr(section, split), section.format)
    if section.format == "images":
        return _file_paths(s, IMAGE_BLOCK_FILES), s.filesystem
    columns = [section.label, *(section.features or [])] if section.features else None
    if section.format == "parquet":
        paths = _file_paths(s, 1)  # a task per file: files read in parallel, each streamed in batches
        return paths.map_batches(_ReadParquet(s.filesystem, columns), batch_format="pyarrow", batch_size=1,
                                 **DATA_TASKS), s.filesystem
    reader = ray.data.read_csv if section.format == "csv" else ray.data.read_json
    ds = reader(s.files, filesystem=s.filesystem, **DATA_TASKS)
    return (ds if columns is None else ds.select_columns(columns)), s.filesystem


def _file_paths(split, per_block: int):
    """A split as a dataset of its file paths, in a seeded random order, `per_block` to a
    block; the map tasks after it read the files (images: `_ToXY`; Parquet: `_ReadParquet`).

    Not `read_binary_files` for images: on 7,000 32x32 PNGs (23 MB, 2 cores) it took 2.3-3.0 s
    an epoch only to read the bytes, against 0.07 s for pyarrow's filesystem in a loop, and
    passed them to the decoding task through the object store. Paths plus one fused read and
    decode: 1.3 s an epoch for read, decode and normalise, against 4.1 s
    (benchmarks/data_ingest.py measures the trials). Ray Data's `read_images` was slower
    still: 1,150 images/s against 2,780 for PIL in _ToXY, because it builds an Arrow tensor
    block per file's image. The order is shuffled once because files often come sorted by
    class (image folders always): a shuffle buffer over class-sorted rows would see two or
    three classes."""
    import pyarrow as pa
    import ray.data

    files = np.array(split.files, dtype=object)
    np.random.default_rng(0).shuffle(files)
    tables = [pa.table({"path": pa.array(files[i : i + per_block].tolist(), type=pa.string())})
              for i in range(0, len(files), per_block)]
    return ray.data.from_arrow(tables)


class _ReadParquet:
    """Parquet file paths -> their rows, `MAP_BATCH_ROWS` at a time (a generator: a file of
    gigabytes is never whole in a task's memory)."""

    def __init__(self, filesystem, columns: list[str] | None):
        self.filesystem, self.columns = filesystem, columns

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in batch.column("path").to_pylist():
            with self.filesystem.open_input_file(path) as f:
                for rows in pq.ParquetFile(f).iter_batches(batch_size=MAP_BATCH_ROWS, columns=self.columns):
                    yield pa.Table.from_batches([rows])


class _ToXY:
    """Raw rows -> {"x": numbers as read, "y": class index}: a picklable Ray Data map."""

    def __init__(self, section: DataSection, info: dict, split: str, filesystem=None):
        self.format, self.label, self.split = section.format, section.label, split
        self.filesystem = filesystem  # images: where their paths are (pyarrow; S3 or local)
        self.features = info.get("features", [])
        self.classes = list(info["classes"])
        self.index = {c: i for i, c in enumerate(self.classes)}
        # images: every one decoded to image_mode and resized to one size (image_size, else
        # the first image's), so that a batch is one array.
        self.mode, self.size = section.image_mode, tuple(info.get("input_shape", [0, 0, 0])[1:])

    def __call__(self, batch: dict) -> dict:
        if self.format == "images":
            image = np.stack([self._decode(path) for path in batch["path"]])
            if image.ndim == 3:  # mode L: (B, H, W)
                image = image[..., None]
            labels = [p.replace("\\", "/").rsplit("/", 2)[-2] for p in batch["path"]]
            x = np.ascontiguousarray(image.transpose(0, 3, 1, 2))  # (B, C, H, W), still uint8
        else:
            columns = [np.asarray(_stack(batch[c]), dtype=np.float32).reshape(len(batch[c]), -1) for c in self.features]
            for name, column in zip(self.features, columns):
                if not np.isfinite(column).all():
                    # Standardised with it, a train split's NaN makes every row's feature NaN:
                    # each trial then failed on a NaN loss, blaming the training.
                    raise DataError(f"data.{self.split}: column {name!r} has a missing value (an empty "
                                     "cell, NaN or inf): fill or drop those rows")
            x = np.concatenate(columns, axis=1)
            labels = batch[self.label].tolist()
        try:
            y = np.fromiter((self.index[_key(v)] for v in labels), dtype=np.int64, count=len(labels))
        except KeyError as exc:
            raise DataError(f"data.{self.split}: label {exc.args[0]!r} is not one of data.train's classes") from None
        return {"x": x, "y": y}

    def _decode(self, path: str) -> np.ndarray:
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            with self.filesystem.open_input_stream(path) as f:
                data = f.read()
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert(self.mode)
                if image.size != (self.size[1], self.size[0]):
                    image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                return np.asarray(image)
        except (OSError, UnidentifiedImageError) as exc:  # one corrupt file names itself
            raise ValueError(f"data.{self.split}: cannot decode image {path}: {exc}") from None


def _stack(column):
    """A column of per-row arrays (a list feature) as one 2-d array."""
    column = np.asarray(column) if not isinstance(column, np.ndarray) else column
    return np.stack(column) if column.dtype == object else column


def _key(value) -> Any:
    """A label as the classes list holds it (JSON-able: numbers as Python numbers)."""
    return value.item() if isinstance(value, np.generic) else value


class _Moments:
    """Per-channel (images) or per-feature sums, for the train split's mean and std."""

    def __init__(self, images: bool):
        self.axes = (0, 2, 3) if images else (0,)

    def __call__(self, batch: dict) -> dict:
        x = batch["x"].astype(np.float64)
        if self.axes != (0,):
            x = x / 255.0
        count = x.size // x.shape[1]  # values per channel (images) or per feature
        return {"s": x.sum(axis=self.axes)[None], "ss": (x * x).sum(axis=self.axes)[None], "n": np.array([count])}


class _Normalize:
    def __init__(self, mean, std, images: bool):
        shape = (1, -1, 1, 1) if images else (1, -1)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(shape)
        self.std = np.asarray(std, dtype=np.float32).reshape(shape)
        self.images = images

    def __call__(self, batch: dict) -> dict:
        x = batch["x"].astype(np.float32)
        if self.images:
            x /= 255.0
        return {"x": (x - self.mean) / self.std, "y": batch["y"]}


def _statistics(train, images: bool, batch_rows: int | None) -> tuple[list[float], list[float]]:
    parts = train.map_batches(_Moments(images), batch_format="numpy", batch_size=batch_rows,
                              **DATA_TASKS).take_all()
    s = sum(np.asarray(p["s"], dtype=np.float64) for p in parts)
    ss = sum(np.asarray(p["ss"], dtype=np.float64) for p in parts)
    n = float(sum(int(p["n"]) for p in parts))
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    std[std < 1e-8] = 1.0  # a constant feature: centred, not divided by zero
    return mean.tolist(), std.tolist()


def _missing(value) -> bool:
    """An empty cell: None, NaN, or in a text column the empty string (pyarrow's CSV reader)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _classes(raw: dict, section: DataSection) -> list:
    found = {split: [_key(v) for v in raw[split].unique(section.label)] for split in SPLITS if split in raw}
    for split, values in found.items():
        if any(_missing(v) for v in values):  # sorting them failed: a TypeError, not a line
            raise SpecError(f"data.{split}: column {section.label!r} (data.label) has a missing value (an empty cell "
                            "or NaN): every row needs its class; fill or drop those rows")
    labels = sorted(found["train"])
    if len(labels) < 2:
        raise SpecError(f"data.label: column {section.label!r} of data.train has {len(labels)} distinct value(s); "
                        "classification needs at least 2")
    if any(isinstance(v, float) and not float(v).is_integer() for v in labels):
        raise SpecError(f"data.label: column {section.label!r} holds fractional numbers; it must name classes")
    for split in SPLITS[1:]:
        if split in raw:
            unknown = sorted(set(found[split]) - set(labels), key=str)
            if unknown:
                raise SpecError(f"data.{split}: label {unknown[0]!r} in column {section.label!r} is not among "
                                f"data.train's classes")
    return labels


def _materialize(ds):
    """`ds.materialize()` once Ray's view of the cluster shows a free CPU, waiting at most
    FREE_CPU_WAIT_S. The view lags the end of the tasks that just ran (the split read before
    this one), and Ray Data warns at once that the cluster "does not have any available CPUs.
    The Dataset job will hang": seen in 1 of about 10 image searches on 2 CPUs, for reads that
    then ran at once. Where something else holds every CPU, the wait ends and the warning stands."""
    import ray

    deadline = time.monotonic() + FREE_CPU_WAIT_S
    while not ray.available_resources().get("CPU") and time.monotonic() < deadline:
        time.sleep(0.02)
    return ds.materialize()


def _batch_rows(fmt: str) -> int | None:
    """Rows per batch of the preprocessing maps. Fused with the read (images, Parquet), their
    batch size is also the number of input rows, here file paths, a task takes: Parquet's is
    None (a batch per block the read yields), so that each file is a task of its own."""
    return {"images": IMAGE_DECODE_ROWS, "parquet": None}.get(fmt, MAP_BATCH_ROWS)


def _size(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def estimated_bytes(info: dict) -> float:
    """The preprocessed splits' size in memory (float32 inputs); CSV / JSON text where the
    row count is unknown before reading (numbers take less as float32 than as text)."""
    total = 0.0
    for split in info["splits"].values():
        if split["rows"] is not None and info.get("input_shape"):
            total += split["rows"] * (4 * math.prod(info["input_shape"]) + 8)
        else:
            total += split["bytes"]
    return total


def load(section: DataSection, info: dict | None = None, *, say: Callable[[str], None] = print) -> TrialData:
    """Read and preprocess the splits (`info`: `files.check_data`'s, checked again if None).

    Needs Ray initialised. Errors in the data itself (a label val has that train has not, a
    missing value) raise `SpecError` naming the key: the splits read here (all of them when
    they are read once, train's statistics when streamed); a streamed val or test split's
    DataError fails each trial that reads it, with the same line.
    """
    try:
        return _load(section, info, say)
    except Exception as exc:
        error = data_error(exc)
        if error is None:
            raise
        raise SpecError(error) from None


def _load(section: DataSection, info: dict | None, say: Callable[[str], None]) -> TrialData:
    import ray

    started = time.monotonic()
    info = dict(info or check_data(section))
    splits = [s for s in SPLITS if getattr(section, s) is not None]
    images = section.format == "images"
    store = ray.cluster_resources().get("object_store_memory", 0.0)
    cache = section.cache == "memory" or (section.cache == "auto" and estimated_bytes(info) <= CACHE_FRACTION * store)
    read = {s: _read(section, s, info) for s in splits}
    raw = {s: ds for s, (ds, _) in read.items()}
    if cache:
        raw = {s: _materialize(ds) for s, ds in raw.items()}
    if not images:
        info["classes"] = _classes(raw, section)
    # images: read and decoded in one task per IMAGE_DECODE_ROWS files (_file_paths)
    xy = {s: raw[s].map_batches(_ToXY(section, info, s, read[s][1]), batch_format="numpy",
                                batch_size=_batch_rows(section.format),
                                **DATA_TASKS)
          for s in splits}
    if cache:
        xy = {s: _materialize(ds) for s, ds in xy.items()}
        del raw, read  # the decoded rows are in xy now: free the object store of the raw ones
    if not images:
        info["input_shape"] = list(xy["train"].take_batch(1, batch_format="numpy")["x"].shape[1:])
    info["mean"], info["std"] = _statistics(xy["train"], images, _batch_rows(section.format))
    datasets = {s: ds.map_batches(_Normalize(info["mean"], info["std"], images), batch_format="numpy",
                                  batch_size=_batch_rows(section.format), **DATA_TASKS)
                for s, ds in xy.items()}
    if not cache:
        for ds in datasets.values():  # its own copy of the context: nothing else changes
            ds.context.target_max_block_size = STREAM_BLOCK_BYTES
    if cache:
        datasets = {s: _materialize(ds) for s, ds in datasets.items()}
        for s, ds in datasets.items():
            info["splits"][s] = {**info["splits"][s], "rows": ds.count()}
    info["cached"] = cache
    rows = ", ".join(f"{s} {info['splits'][s]['rows']:,}" if info["splits"][s]["rows"] is not None else f"{s} ?"
                     for s in splits)
    shape = "x".join(map(str, info["input_shape"]))
    where = (f"read once into Ray's object store ({_size(estimated_bytes(info))})" if cache else
             f"streamed from the files by every trial (about {_size(estimated_bytes(info))}; "
             f"Ray's object store holds {_size(store)})")
    say(f"data: {section.format}, {rows} rows, inputs {shape}, {len(info['classes'])} classes; "
        f"{where} in {time.monotonic() - started:.1f}s")
    return TrialData(info, datasets, section.shuffle_buffer)
