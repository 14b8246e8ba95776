"""Built-in tasks on scikit-learn's digits (1,797 8x8 grey images, shipped with the package)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from .base import Splits, SupervisedTask


def stratified_splits(x: np.ndarray, y: np.ndarray, seed: int, val: float = 0.2, test: float = 0.2) -> Splits:
    """Seeded, stratified train / validation / test split, as float32 / int64 tensors."""
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val / (1 - test), stratify=y_rest, random_state=seed
    )

    def pair(a, b):
        return torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.int64)

    return Splits(pair(x_train, y_train), pair(x_val, y_val), pair(x_test, y_test))


@lru_cache(maxsize=8)  # per process: reused trial actors don't reload
def digits_splits(seed: int) -> Splits:
    data = load_digits()
    return stratified_splits(data.data / 16.0, data.target, seed)


def _accuracy_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(dim=1) == y).sum()


class _Digits(SupervisedTask):
    val_metrics = {"val_accuracy": _accuracy_sum}

    def splits(self, seed: int) -> Splits:
        return digits_splits(seed)


class DigitsMLP(_Digits):
    """64 -> hidden -> hidden -> 10, ReLU and dropout. Config: hidden (128), dropout (0)."""

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        hidden, dropout = int(config.get("hidden", 128)), float(config.get("dropout", 0.0))
        return nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )


class DigitsCNN(_Digits):
    """Two 3x3 convolutions, a 2x2 max-pool and a classifier head.

    Config: channels (16), hidden (64), dropout (0). Inputs are the flat 64 pixels, as for
    the MLP, so both share data and input examples.
    """

    def build_model(self, config: dict[str, Any]) -> nn.Module:
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
