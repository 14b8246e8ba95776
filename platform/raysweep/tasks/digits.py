"""Built-in tasks on scikit-learn's digits (1,797 8x8 grey images, shipped with the package)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Splits, SupervisedTask, accuracy_sum, mlp
from .params import COUNT, PROBABILITY

if TYPE_CHECKING:
    from torch import nn

    from ..loop import SumMetrics


@lru_cache(maxsize=8)  # per process: reused trial actors don't reload
def digits_splits(seed: int) -> Splits:
    from sklearn.datasets import load_digits

    from .data import stratified_splits

    data = load_digits()
    return stratified_splits(data.data / 16.0, data.target, seed)


class _Digits(SupervisedTask):
    val_metrics: ClassVar[SumMetrics] = {"val_accuracy": accuracy_sum}

    def splits(self, seed: int) -> Splits:
        return digits_splits(seed)


class DigitsMLP(_Digits):
    """64 -> hidden -> hidden -> 10, ReLU and dropout. Config: hidden (128), dropout (0)."""

    param_rules = {**SupervisedTask.param_rules, "hidden": COUNT, "dropout": PROBABILITY}

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        return mlp(64, 10, hidden=int(config.get("hidden", 128)), layers=2, dropout=float(config.get("dropout", 0.0)))


class DigitsCNN(_Digits):
    """Two 3x3 convolutions, a 2x2 max-pool and a classifier head.

    Config: channels (16), hidden (64), dropout (0). Inputs are the flat 64 pixels, as for
    the MLP, so both share data and input examples.
    """

    param_rules = {**SupervisedTask.param_rules, "channels": COUNT, "hidden": COUNT, "dropout": PROBABILITY}

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        from torch import nn

        c, hidden = int(config.get("channels", 16)), int(config.get("hidden", 64))
        dropout = float(config.get("dropout", 0.0))
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(2 * c * 16, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )
