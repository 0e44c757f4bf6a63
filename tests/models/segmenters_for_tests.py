"""Small segmenters and inputs for the model/attribution tests (fast on a CPU, seeded locally)."""

from __future__ import annotations

import torch
from torch import nn


def generator(seed: int = 0) -> torch.Generator:
    """A local random generator (nothing global is seeded)."""
    return torch.Generator().manual_seed(seed)


class TinySegmenter(nn.Module):
    """``(B, 1, H, W) -> (B, C, H, W)``: conv-tanh-conv(dilated)-tanh-1x1, optionally with BatchNorm."""

    def __init__(self, num_classes: int = 3, hidden: int = 6, seed: int = 0, batch_norm: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.first = nn.Conv2d(1, hidden, 3, padding=1)
        self.norm = nn.BatchNorm2d(hidden) if batch_norm else nn.Identity()
        self.second = nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2)
        self.head = nn.Conv2d(hidden, num_classes, 1)
        random = generator(seed)
        with torch.no_grad():
            for parameter in self.parameters():
                if parameter.dim() > 1:
                    parameter.copy_(torch.randn(parameter.shape, generator=random) * 0.6)
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=random) * 0.1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.norm(self.first(image)))
        return self.head(torch.tanh(self.second(hidden)))


def random_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images ``(B, 1, H, W)`` in [0, 1]."""
    noise = torch.rand(batch, 1, height, width, generator=generator(seed))
    return torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)


def stripe_mask(batch: int, num_classes: int, height: int, width: int, classes: list[int] | None = None) -> torch.Tensor:
    """One-hot ``(B, C, H, W)`` of vertical stripes of ``classes`` (default: all classes)."""
    classes = list(range(num_classes)) if classes is None else classes
    columns = torch.arange(width) * len(classes) // width
    label_row = torch.tensor(classes)[columns]
    labels = label_row.expand(batch, height, width)
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
