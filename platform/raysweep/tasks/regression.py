"""Built-in `regression` task: an MLP regressor on a table of numeric features, scored by R^2.

The table comes from the config (the spec's `fixed`), as for `tabular`: ``dataset: diabetes``
(scikit-learn's, shipped with it: 442 patients, 10 features, a disease-progression score; the
default), or ``data: path/to/file.csv`` (or ``.parquet``) with ``target: column``, a numeric
column. A seeded random 60/20/20 split; features and target are standardised with the train
split's statistics, so the loss (`val_loss`, mean squared error) is in units of the target's
train variance. `val_r2` is the coefficient of determination on the validation split,
1 - SS_res / SS_tot (`metric: val_r2`, `mode: max`); the test split gets `test_r2`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import Splits
from .params import OneOf
from .tabular import Source, TableTask, read_frame, source_of

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..loop import SumMetrics

DATASETS = ("diabetes",)  # scikit-learn's load_<name> with a continuous target


@lru_cache(maxsize=8)  # per process: reused trial actors don't read the file again
def load_regression_table(source: Source) -> tuple[np.ndarray, np.ndarray]:
    """(features, target) as float64 arrays."""
    if source.dataset is not None:
        import sklearn.datasets  # here, not at import: resolving the task stays fast

        bunch = getattr(sklearn.datasets, f"load_{source.dataset}")()
        return bunch.data.astype(np.float64), bunch.target.astype(np.float64)
    import pandas as pd

    features, target = read_frame(Path(source.path), source.target, "regression")
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        raise ValueError(f"regression: target column {source.target!r} of {Path(source.path).name} is not numeric; "
                         "for class labels use the tabular task")
    if target.nunique() < 2:
        raise ValueError(f"regression: target column {source.target!r} of {Path(source.path).name} is constant")
    return features.to_numpy(dtype=np.float64), target.to_numpy(dtype=np.float64)


@lru_cache(maxsize=16)
def regression_splits(source: Source, seed: int) -> Splits:
    """Seeded random 60/20/20 split; features and target standardised by the train split's statistics."""
    import torch
    from sklearn.model_selection import train_test_split

    from .data import standardized

    x, y = load_regression_table(source)
    if len(y) < 10:
        raise ValueError(f"regression: {source} has {len(y)} rows; a 60/20/20 split needs at least 10")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, random_state=seed)
    mean, std = y_train.mean(), y_train.std() or 1.0

    def pair(a, b):
        return torch.as_tensor(a, dtype=torch.float32), torch.as_tensor((b - mean) / std, dtype=torch.float32)

    return standardized(Splits(pair(x_train, y_train), pair(x_val, y_val), pair(x_test, y_test)))


def squared_error(out: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """The regressor's loss: mean squared error of its one output (the loop passes `reduction`)."""
    from torch.nn.functional import mse_loss

    return mse_loss(out.squeeze(-1), y, **kwargs)


def r2_sum(variance: float):
    """A `SumMetrics` function whose mean over a split is its R^2: per sample 1 - (y' - y)^2 /
    Var(y), with `variance` the split's own (population) variance of y."""
    def r2(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (1.0 - (out.squeeze(-1) - y) ** 2 / variance).sum()

    return r2


class Regression(TableTask):
    """input -> hidden (x layers, ReLU, dropout) -> 1.

    Config: dataset or data + target (see the module), hidden (64), layers (2), dropout (0).
    """

    loss_fn = staticmethod(squared_error)
    val_metrics: ClassVar[SumMetrics] = {}  # val_r2 needs the split: split_metrics
    param_rules = {**TableTask.param_rules, "dataset": OneOf(DATASETS, optional=True)}

    def splits_for(self, config: dict[str, Any], seed: int) -> Splits:
        return regression_splits(source_of(config, "regression", DATASETS), seed)

    def split_metrics(self, y: torch.Tensor) -> SumMetrics:
        variance = float(y.double().var(correction=0))
        return {"val_r2": r2_sum(variance if variance > 0 else 1.0)}

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        x, _ = load_regression_table(source_of(config, "regression", DATASETS))
        return self.table_mlp(config, x.shape[1], 1)
