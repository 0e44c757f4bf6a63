"""The torch VIF, Qabf and SSIM equal the evaluation's numpy metrics and carry useful gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.metrics.test_fusion_metrics import smooth_random_image
from uaafusion.metrics import differentiable
from uaafusion.metrics.fusion import qabf, structural_similarity, visual_information_fidelity

HEIGHT, WIDTH = 72, 96


def _triples(count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` (fused, ir, vi) integer-valued triples, the fused one non-integer to test float input too."""
    triples = []
    for index in range(count):
        ir = smooth_random_image(HEIGHT, WIDTH, seed=3 * index)
        vi = smooth_random_image(HEIGHT, WIDTH, seed=3 * index + 1)
        fused = 0.6 * np.maximum(ir, vi) + 0.4 * (ir + vi) / 2 + 0.3
        triples.append((fused, ir, vi))
    return triples


def _batch(arrays: list[np.ndarray], requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.stack(arrays)[:, None], dtype=torch.float64, requires_grad=requires_grad)


def _as_batches(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    return tuple(_batch([triple[index] for triple in triples]) for index in range(3))


def test_equal_to_the_numpy_metrics_image_by_image() -> None:
    triples = _triples(3)
    fused, ir, vi = _as_batches(triples)
    ssim = differentiable.ssim_sum(fused, ir, vi)
    vif = differentiable.vif_sum(fused, ir, vi)
    edge = differentiable.qabf(fused, ir, vi)
    for index, (fused_image, ir_image, vi_image) in enumerate(triples):
        expected_ssim = structural_similarity(fused_image, ir_image) + structural_similarity(fused_image, vi_image)
        expected_vif = visual_information_fidelity(ir_image, fused_image) + visual_information_fidelity(
            vi_image, fused_image
        )
        assert float(ssim[index]) == pytest.approx(expected_ssim, rel=1e-9, abs=1e-12)
        assert float(vif[index]) == pytest.approx(expected_vif, rel=1e-9, abs=1e-12)
        assert float(edge[index]) == pytest.approx(qabf(fused_image, ir_image, vi_image), rel=1e-9, abs=1e-12)


def test_the_identity_and_degenerate_conventions_match() -> None:
    _, ir_image, vi_image = _triples(1)[0]
    flat = np.zeros_like(ir_image)
    ir, vi, zero = _batch([ir_image]), _batch([vi_image]), _batch([flat])
    # F = I: SSIM(I, I) = 1, VIF(I, I) = 1.
    assert float(differentiable.ssim_sum(ir, ir, vi)) == pytest.approx(1 + structural_similarity(ir_image, vi_image))
    assert float(differentiable.vif_sum(ir, ir, zero)) == pytest.approx(1.0)  # VIF against a flat reference is 0
    assert float(differentiable.qabf(ir, zero, zero)) == 0.0  # two edge-free sources


def test_gradients_are_finite_and_point_uphill() -> None:
    """One small step along each metric's gradient raises that metric (the numpy value, not the torch one)."""
    fused_image, ir_image, vi_image = _triples(1)[0]
    ir, vi = _batch([ir_image]), _batch([vi_image])
    for metric, reference in (
        (differentiable.ssim_sum, lambda f: structural_similarity(f, ir_image) + structural_similarity(f, vi_image)),
        (differentiable.vif_sum,
         lambda f: visual_information_fidelity(ir_image, f) + visual_information_fidelity(vi_image, f)),
        (differentiable.qabf, lambda f: qabf(f, ir_image, vi_image)),
    ):
        fused = _batch([fused_image], requires_grad=True)
        metric(fused, ir, vi).sum().backward()
        gradient = fused.grad[0, 0].numpy()
        assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0
        step = 0.5 * gradient / np.abs(gradient).max()
        assert reference(fused_image + step) > reference(fused_image)


def test_mismatched_shapes_name_the_shapes() -> None:
    fused, ir, vi = _as_batches(_triples(1))
    with pytest.raises(ValueError, match="same shape"):
        differentiable.ssim_sum(fused, ir[..., :-1], vi)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        differentiable.qabf(fused[0], ir[0], vi[0])
