"""Splitting and scaling that the built-in tasks' in-memory data share."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .base import Splits


def stratified_splits(x: np.ndarray, y: np.ndarray, seed: int, val: float = 0.2, test: float = 0.2) -> Splits:
    """Seeded, stratified train / validation / test split, as float32 / int64 tensors."""
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val / (1 - test), stratify=y_rest, random_state=seed
    )

    def pair(a, b):
        return torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.int64)

    return Splits(pair(x_train, y_train), pair(x_val, y_val), pair(x_test, y_test))


def standardized(splits: Splits) -> Splits:
    """Every split scaled by the *train* split's mean and std: val and test never inform it."""
    x = splits.train[0].double()
    mean, std = x.mean(0), x.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column is centred, not divided by 0

    def scale(part: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return ((part[0].double() - mean) / std).float(), part[1]

    return Splits(scale(splits.train), scale(splits.val), scale(splits.test))
