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


def test_first_step_equals_a_full_step_from_zeros_in_values_and_gradients():
    cell = ConvLSTMCell(input_channels=6, hidden_channels=4)
    generator = torch.Generator().manual_seed(1)
    leading = torch.rand(2, 2, 9, 11, generator=generator, requires_grad=True)
    padded = torch.cat([leading, torch.zeros(2, 4, 9, 11)], dim=1)

    hidden_full, cell_full = cell(padded, None)
    (hidden_full.sum() + 2 * cell_full.sum()).backward()
    full_grads = (leading.grad.clone(), cell.gates.weight.grad.clone(), cell.gates.bias.grad.clone())
    leading.grad, cell.gates.weight.grad, cell.gates.bias.grad = None, None, None

    hidden_first, cell_first = cell.first_step(leading)
    (hidden_first.sum() + 2 * cell_first.sum()).backward()
    torch.testing.assert_close(hidden_first, hidden_full)
    torch.testing.assert_close(cell_first, cell_full)
    torch.testing.assert_close(leading.grad, full_grads[0])
    torch.testing.assert_close(cell.gates.weight.grad, full_grads[1])
    torch.testing.assert_close(cell.gates.bias.grad, full_grads[2])
    # The weights that would multiply the zero channels get no gradient, as in the full step.
    assert torch.count_nonzero(full_grads[1][:, 2:]) == 0


def test_first_step_refuses_more_channels_than_the_cell_takes():
    import pytest

    with pytest.raises(ValueError, match="first_step"):
        ConvLSTMCell(input_channels=3, hidden_channels=2).first_step(torch.rand(1, 4, 5, 5))
