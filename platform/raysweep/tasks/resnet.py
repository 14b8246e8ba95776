"""The image task's network and augmentation (torch): a small ResNet and random shifts and zoom."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1, strided) shortcut: the
    block of ResNet-18/34 (He et al. 2015, "Deep Residual Learning", fig. 2)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(c_in: int, classes: int, *, channels: int = 16, stages: int = 3, dropout: float = 0.0) -> nn.Sequential:
    """A stem, then `stages` basic blocks, each after the first halving the resolution and
    doubling the channels (CIFAR ResNets' shape, one block a stage), pooled to a linear head.
    Batch norm sits only after convolutions: its statistics then pool over pixels, so a
    last batch of one image still trains."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
    c = channels
    for stage in range(stages):
        c_out = channels * 2**stage
        layers.append(BasicBlock(c, c_out, stride=1 if stage == 0 else 2))
        c = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, classes))


def shift_and_scale(x: torch.Tensor, max_shift: float = 0.125, max_scale: float = 0.1) -> torch.Tensor:
    """Random translation (up to `max_shift` of the side) and zoom per image, on the device:
    one `grid_sample` per batch. No flips: digits and text are not mirror-symmetric."""
    n = x.shape[0]
    scale = 1 + (torch.rand(n, device=x.device) * 2 - 1) * max_scale
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * (2 * max_shift)  # grid units span 2
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
