"""Small image operators shared by the losses and the metrics (one place for each)."""

from __future__ import annotations

import torch
import torch.nn.functional as functional

# Sobel kernels (cross-correlation, as conv2d applies them): x responds to left->right change.
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_Y = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))


def sobel(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives with zero padding ('same' size).

    image: ``(B, 1, H, W)`` float -> ``(gx, gy)``, each ``(B, 1, H, W)``.
    """
    kernels = torch.tensor((_SOBEL_X, _SOBEL_Y), dtype=image.dtype, device=image.device).unsqueeze(1)
    gradients = functional.conv2d(image, kernels, padding=1)
    return gradients[:, :1], gradients[:, 1:]


def sobel_magnitude_l1(image: torch.Tensor) -> torch.Tensor:
    """``|gx| + |gy|`` of :func:`sobel`: ``(B, 1, H, W) -> (B, 1, H, W)`` (the fusion gradient loss)."""
    gradient_x, gradient_y = sobel(image)
    return gradient_x.abs() + gradient_y.abs()
