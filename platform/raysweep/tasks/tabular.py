"""Built-in `tabular` task: an MLP classifier on a table of numeric features.

The table comes from the config (the spec's `fixed`): ``dataset`` names one of
scikit-learn's shipped sets (``wine``, the default; ``breast_cancer``; ``iris``), or
``data: path/to/file.csv`` (or ``.parquet``) with ``target: column`` names a file of your own.
Every other column of the file is a feature and must be numeric; the target's values
(strings or integers) become classes 0..K-1 in sorted order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import Splits, SupervisedTask, accuracy_sum, mlp
from .params import COUNT, PROBABILITY, Bounds, OneOf

if TYPE_CHECKING:
    from torch import nn

    from ..loop import SumMetrics

DATASETS = ("wine", "breast_cancer", "iris")  # scikit-learn's load_<name>
FILE_TYPES = (".csv", ".parquet")


@dataclass(frozen=True)
class Table:
    x: np.ndarray  # (rows, features) float64, unscaled
    y: np.ndarray  # (rows,) int64 class indices
    classes: tuple[str, ...]  # the label of each class index
    features: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """Where a table comes from; hashable, so it keys the per-process caches."""

    dataset: str | None = None
    path: str | None = None
    target: str | None = None
    # An edited file is a new source: read again, not served stale.
    mtime_ns: int = 0
    size: int = 0

    def __str__(self) -> str:
        return self.dataset or f"{self.path} (target {self.target!r})"


def data_dir() -> Path:
    """What a relative `data` path is relative to: the directory the process started in.

    raysweep's trials stay in it (tuner.STAY_IN_WORKING_DIR); Tune records it in
    TUNE_ORIG_WORKING_DIR all the same, which wins where a user turned Tune's moving of trial
    processes into their trial folders back on (RAY_CHDIR_TO_TRIAL_DIR=1).
    """
    return Path(os.environ.get("TUNE_ORIG_WORKING_DIR") or os.getcwd())


def source_of(config: dict[str, Any], task: str = "tabular", datasets: tuple[str, ...] = DATASETS) -> Source:
    """The config's data source, or a one-line ValueError naming the key at fault. `task`
    names the task in the error; `datasets[0]` is its default."""
    data, dataset, target = config.get("data"), config.get("dataset"), config.get("target")
    if data is None:
        if target is not None:
            raise ValueError(f"{task}: target ({target!r}) needs data: a CSV or Parquet file to take it from")
        name = datasets[0] if dataset is None else dataset
        if name not in datasets:
            raise ValueError(f"{task}: unknown dataset {name!r} (choose {', '.join(datasets)}; or data: a file)")
        return Source(dataset=name)
    if dataset is not None:
        raise ValueError(f"{task}: both dataset ({dataset!r}) and data ({data!r}) given; keep one")
    if target is None:
        raise ValueError(f"{task}: data ({data!r}) needs target: the name of its target column")
    path = data_dir() / Path(str(data)).expanduser()
    if path.suffix.lower() not in FILE_TYPES:
        raise ValueError(f"{task}: data ({data!r}) must be a .csv or .parquet file")
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{task}: data file not found: {path}") from None
    return Source(path=str(path), target=str(target), mtime_ns=stat.st_mtime_ns, size=stat.st_size)


@lru_cache(maxsize=8)  # per process: reused trial actors don't read the file again
def load_table(source: Source) -> Table:
    if source.dataset is not None:
        import sklearn.datasets  # here, not at import: resolving the task stays fast

        bunch = getattr(sklearn.datasets, f"load_{source.dataset}")()
        classes = tuple(str(name) for name in bunch.target_names)
        return Table(bunch.data.astype(np.float64), bunch.target.astype(np.int64), classes, tuple(bunch.feature_names))
    return read_table(Path(source.path), source.target)


def read_table(path: Path, target: str) -> Table:
    """A CSV or Parquet file as features and encoded labels; ValueError on what can't train."""
    features, labels = read_frame(path, target)
    classes, y = encode_labels(labels, f"target column {target!r} of {path.name}")
    return Table(features.to_numpy(dtype=np.float64), y, classes, tuple(map(str, features.columns)))


def read_frame(path: Path, target: str, task: str = "tabular"):
    """A CSV or Parquet file as (numeric feature columns, target column), pandas; ValueError
    naming the file and column on what can't train."""
    import pandas as pd  # here, not at import: `raysweep validate` stays fast

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
    except ImportError:
        raise ValueError(
            f"{task}: reading {path.name} needs pyarrow: pip install pyarrow (or raysweep[tabular])"
        ) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed: pandas' first line says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ValueError(f"{task}: cannot read {path}: {first}") from None
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:10])) + (", ..." if len(frame.columns) > 10 else "")
        from ..files import separator_hint

        raise ValueError(f"{task}: target column {target!r} not in {path.name} (columns: {shown})"
                         + separator_hint(frame.columns))
    missing = frame.isna().sum()
    if missing.any():  # refused, not dropped: silently training on fewer rows hides a data problem
        column, count = next(iter(missing[missing > 0].items()))
        raise ValueError(f"{task}: column {column!r} of {path.name} has {count} missing values; fill or drop them first")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise ValueError(f"{task}: {path.name} has no feature columns besides target {target!r}")
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]):
            raise ValueError(
                f"{task}: feature column {column!r} of {path.name} is not numeric ({features[column].dtype}); "
                "encode it as numbers or drop it"
            )
    return features, frame[target]


def encode_labels(labels, what: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Labels (strings or integers) as class indices 0..K-1 in sorted order, and each index's label."""
    import pandas as pd

    if pd.api.types.is_float_dtype(labels) and not np.all(np.mod(labels.to_numpy(), 1) == 0):
        raise ValueError(f"tabular: {what} holds fractional numbers; tabular is classification (class labels)")
    values = labels.to_numpy() if pd.api.types.is_numeric_dtype(labels) else labels.astype(str).to_numpy()
    classes, y = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"tabular: {what} has {len(classes)} distinct value(s); classification needs at least 2")
    return tuple(str(c) for c in classes), y.astype(np.int64)


@lru_cache(maxsize=16)
def tabular_splits(source: Source, seed: int) -> Splits:
    """Seeded stratified 60/20/20 split, standardized with the train split's statistics."""
    from .data import standardized, stratified_splits

    table = load_table(source)
    try:
        return standardized(stratified_splits(table.x, table.y, seed))
    except ValueError as exc:  # scikit-learn's: a class too rare to appear in every split
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"tabular: {source} cannot be split 60/20/20 by class: {first}") from None


class TableTask(SupervisedTask):
    """What the table tasks (this one, and regression.py's) share: an MLP over a table's rows,
    input -> hidden (x layers, ReLU, dropout) -> outputs, the table a dataset they ship or a
    user's file, and their default dataset when the config names none.

    Config: dataset or data + target (see the module), hidden (64), layers (2), dropout (0).
    """

    param_rules = {**SupervisedTask.param_rules, "hidden": COUNT, "layers": Bounds(0, integer=True),
                   "dropout": PROBABILITY}

    def splits(self, seed: int) -> Splits:
        return self.splits_for({}, seed)  # no config: the default dataset

    @staticmethod
    def table_mlp(config: dict[str, Any], n_in: int, n_out: int) -> nn.Module:
        return mlp(n_in, n_out, hidden=int(config.get("hidden", 64)), layers=int(config.get("layers", 2)),
                   dropout=float(config.get("dropout", 0.0)))


class Tabular(TableTask):
    """input -> hidden (x layers, ReLU, dropout) -> classes.

    Config: dataset or data + target (see the module), hidden (64), layers (2), dropout (0).
    """

    val_metrics: ClassVar[SumMetrics] = {"val_accuracy": accuracy_sum}
    data_formats: ClassVar[tuple[str, ...]] = ("parquet", "csv", "jsonl")
    param_rules = {**TableTask.param_rules, "dataset": OneOf(DATASETS, optional=True)}

    def splits_for(self, config: dict[str, Any], seed: int) -> Splits:
        return tabular_splits(source_of(config), seed)

    def build_model(self, config: dict[str, Any], info: dict | None = None) -> nn.Module:
        # Sizes come from the data, so a checkpoint's config (and data info) rebuilds its model.
        if info is not None:  # the spec's data: section (a feature vector per row)
            n_in, n_out = info["input_shape"][0], len(info["classes"])
        else:
            table = load_table(source_of(config))
            n_in, n_out = table.x.shape[1], len(table.classes)
        layers = int(config.get("layers", 2))
        if layers < 0:
            raise ValueError(f"tabular: layers ({layers}) must be 0 (a linear model) or more")
        return self.table_mlp(config, n_in, n_out)
