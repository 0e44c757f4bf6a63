"""ConvLSTM cell: shapes, state carried, gate equations."""

from __future__ import annotations

import torch

from uaafusion.models.memory import ConvLSTMCell


def test_convlstm_shapes_and_equations():
    cell = ConvLSTMCell(input_channels=3, hidden_channels=4, kernel_size=1)
    inputs = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    hidden, state = cell(inputs)
    assert hidden.shape == state.shape == (2, 4, 5, 7)
    # kernel 1: the gates are a per-pixel linear map of [x, h]; check c' and h' by hand.
    zeros = torch.zeros(2, 4, 5, 7)
    gates = torch.nn.functional.conv2d(torch.cat([inputs, hidden], 1), cell.gates.weight, cell.gates.bias)
    i, f, o, g = gates.chunk(4, 1)
    hidden_two, state_two = cell(inputs, (hidden, state))
    expected_state = torch.sigmoid(f) * state + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(state_two, expected_state)
    torch.testing.assert_close(hidden_two, torch.sigmoid(o) * torch.tanh(expected_state))
    assert not torch.allclose(hidden_two, hidden)
    assert torch.equal(cell.initial_state(inputs)[0], zeros)
