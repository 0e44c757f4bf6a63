"""Convolutional LSTM cell: the memory that the unfolding network carries across its stages."""

from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """One step of a convolutional LSTM (Shi et al., 2015) with 'same' padding.

    ``forward(x, (h, c)) -> (h', c')`` with ``x (B, input_channels, H, W)`` and
    ``h, c, h', c' (B, hidden_channels, H, W)``; the four gates come from one convolution of
    ``[x, h]``: ``i, f, o = sigmoid(.)``, ``g = tanh(.)``, ``c' = f*c + i*g``, ``h' = o*tanh(c')``.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                               padding=kernel_size // 2)
        with torch.no_grad():
            # Forget-gate bias 1: remember by default at the start of training.
            self.gates.bias.zero_()
            self.gates.bias[hidden_channels:2 * hidden_channels].fill_(1.0)

    def initial_state(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)``, each ``(B, hidden_channels, H, W)``, on ``reference``'s device/dtype/size."""
        batch, _, height, width = reference.shape
        zeros = reference.new_zeros(batch, self.hidden_channels, height, width)
        return zeros, zeros.clone()

    def forward(
        self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs (B, input_channels, H, W)``, ``state`` ``(h, c)`` or None (zeros) -> ``(h', c')``."""
        if inputs.shape[1] != self.input_channels:
            raise ValueError(f"ConvLSTMCell expects {self.input_channels} input channels, got {inputs.shape[1]}")
        hidden, cell = state if state is not None else self.initial_state(inputs)
        input_gate, forget_gate, output_gate, candidate = self.gates(torch.cat([inputs, hidden], dim=1)).chunk(4, 1)
        cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        return hidden, cell

    def first_step(self, leading_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step from a zero state when only the first input channels can be non-zero.

        ``leading_inputs (B, k, H, W)``, ``k <= input_channels``: the same ``(h', c')`` as
        ``forward(cat([leading_inputs, zeros]), None)``, but the gate convolution reads only the
        ``k`` channels that are not zero (its other weights would multiply zeros). In the unfolding
        network the first stage's memories and state are all zero, so this skips 3/4 of that
        stage's largest convolution, forward and backward.
        """
        channels = leading_inputs.shape[1]
        if not 0 < channels <= self.input_channels:
            raise ValueError(f"first_step takes 1..{self.input_channels} leading channels, got {channels}")
        gates = nn.functional.conv2d(leading_inputs, self.gates.weight[:, :channels], self.gates.bias,
                                     padding=self.gates.padding)
        input_gate, _, output_gate, candidate = gates.chunk(4, 1)
        cell = torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        return hidden, cell
