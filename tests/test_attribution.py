"""Attribution weights: exactness against a plain autograd loop, independence, cache, restoration."""

from __future__ import annotations

import pytest
import torch

from tests.models.segmenters_for_tests import TinySegmenter, random_images, stripe_mask
from uaafusion.attribution import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    WeightCache,
    inputs_per_pass,
    labels_to_one_hot,
    modality_weights,
    pathway_attention,
    region_attribution,
    segmenter_fingerprint,
)
from uaafusion.errors import ConfigError, DataError
from uaafusion.models import create_segmenter


def reference_region_attribution(segmenter, image, mask, steps):
    """IG with riemann_right written out: one backward pass per image, class and step."""
    batch, num_classes = mask.shape[:2]
    scores = torch.zeros(batch, num_classes)
    segmenter.eval()
    for b in range(batch):
        for c in range(num_classes):
            region = mask[b, c] > 0.5
            if not region.any():
                continue
            gradient_sum = torch.zeros_like(image[b:b + 1])
            for k in range(1, steps + 1):
                point = (image[b:b + 1] * (k / steps)).requires_grad_(True)
                score = segmenter(point)[0, c][region].mean()
                (gradient,) = torch.autograd.grad(score, point)
                gradient_sum += gradient
            integrated = image[b:b + 1] * gradient_sum / steps
            scores[b, c] = torch.relu(integrated[0, 0][region].mean())
    return scores


def _mixed_mask(batch, num_classes, height, width):
    """Stripes with a different set of classes per image (image 0 lacks the last class)."""
    masks = []
    for b in range(batch):
        classes = [c for c in range(num_classes) if not (b == 0 and c == num_classes - 1)]
        masks.append(stripe_mask(1, num_classes, height, width, classes))
    return torch.cat(masks)


@pytest.mark.parametrize("engine", ["reverse", "forward", "captum"])
@pytest.mark.parametrize("internal_batch_size", [None, 3])
def test_batched_attribution_matches_plain_autograd_loop(internal_batch_size, engine):
    segmenter = TinySegmenter(num_classes=4, seed=1)
    image = random_images(2, 13, 17, seed=2)
    mask = _mixed_mask(2, 4, 13, 17)
    steps = 4
    batched = region_attribution(segmenter, image, mask, steps, internal_batch_size=internal_batch_size,
                                 engine=engine)
    reference = reference_region_attribution(segmenter, image, mask, steps)
    assert batched.shape == (2, 4)
    assert (reference > 0).sum() >= 3, "test inputs should give several positive region scores"
    relative_error = (batched - reference).abs().max() / reference.abs().max()
    assert relative_error <= 1e-4
    assert batched[0, 3] == 0  # class absent from image 0


def test_captum_engine_runs_one_batched_pass_not_a_loop():
    segmenter = TinySegmenter(num_classes=5)
    batch_sizes: list[int] = []
    segmenter.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    mask = _mixed_mask(2, 5, 8, 10)  # 4 + 5 present classes = 9 copies
    region_attribution(segmenter, random_images(2, 8, 10), mask, steps=3, engine="captum")
    assert batch_sizes == [9 * 3]
    batch_sizes.clear()
    region_attribution(segmenter, random_images(2, 8, 10), mask, steps=3, internal_batch_size=9, engine="captum")
    assert max(batch_sizes) <= 9 and sum(batch_sizes) == 27


@pytest.mark.parametrize(("engine", "internal_batch_size", "passes_with_bound"), [
    ("forward", 10, [2, 2, 2]),  # a pass carries every class's tangent: at most 10 // 5 classes = 2 points
    ("reverse", 4, [4, 2]),  # a pass carries the points only; the classes share it
])
def test_derivative_engines_run_each_point_once_for_all_classes(engine, internal_batch_size, passes_with_bound):
    segmenter = TinySegmenter(num_classes=5)
    batch_sizes: list[int] = []
    segmenter.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    mask = _mixed_mask(2, 5, 8, 10)
    region_attribution(segmenter, random_images(2, 8, 10), mask, steps=3, engine=engine)
    assert batch_sizes == [2 * 3]  # one pass over the 6 points, every class at once
    batch_sizes.clear()
    region_attribution(segmenter, random_images(2, 8, 10), mask, steps=3, internal_batch_size=internal_batch_size,
                       engine=engine)
    assert batch_sizes == passes_with_bound


def test_engines_agree_on_a_real_segmenter():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)  # a random segmenter with several positive region scores on these images
        segmenter = create_segmenter("DeepLabV3Plus", "mobilenet_v2", num_classes=4).eval()
    image = random_images(2, 32, 48, seed=6)
    mask = _mixed_mask(2, 4, 32, 48)
    results = {engine: region_attribution(segmenter, image, mask, steps=3, engine=engine)
               for engine in ("reverse", "forward", "captum")}
    assert (results["captum"] > 0).sum() >= 3
    for engine in ("reverse", "forward"):
        relative = (results[engine] - results["captum"]).abs().max() / results["captum"].abs().max()
        assert relative <= 1e-4, engine


@pytest.mark.parametrize("engine", ["reverse", "forward", "captum"])
def test_library_defaults_bound_the_segmenter_inputs_per_pass(engine):
    """Called without ``internal_batch_size`` (as a library user would), no pass takes more than
    ``DEFAULT_INTERNAL_BATCH_SIZE`` inputs at 256x256 (an unbounded batch is slower and its memory grows
    with images x steps x classes), and fewer at larger sizes."""
    segmenter = TinySegmenter(num_classes=3)
    batch_sizes: list[int] = []
    segmenter.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    images = random_images(8, 256, 256)
    mask = _mixed_mask(8, 3, 256, 256)
    region_attribution(segmenter, images, mask, steps=5, engine=engine)
    assert max(batch_sizes) <= DEFAULT_INTERNAL_BATCH_SIZE == 32
    assert sum(batch_sizes) >= 8 * 5  # every point was evaluated
    batch_sizes.clear()
    modality_weights(segmenter, random_images(1, 480, 640), random_images(1, 480, 640),
                     stripe_mask(1, 3, 480, 640), steps=4, engine=engine)
    assert max(batch_sizes) <= inputs_per_pass(DEFAULT_INTERNAL_BATCH_SIZE, 480, 640) == 6


def test_memory_knob_shrinks_passes_for_large_images():
    assert inputs_per_pass(None, 1024, 1280) is None
    assert inputs_per_pass(32, 128, 128) == 32 and inputs_per_pass(32, 256, 256) == 32
    assert inputs_per_pass(32, 480, 640) == 6
    assert inputs_per_pass(32, 1024, 1280) == 1
    segmenter = TinySegmenter(num_classes=2)
    batch_sizes: list[int] = []
    segmenter.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    image = random_images(1, 256, 512)  # 2 x 256x256: 16 -> 8 inputs per pass -> 4 points of 2 classes
    mask = stripe_mask(1, 2, 256, 512)
    region_attribution(segmenter, image, mask, steps=8, internal_batch_size=16, engine="forward")
    assert batch_sizes == [4, 4]


def test_unknown_engine_is_a_config_error():
    with pytest.raises(ConfigError, match="attribution.engine"):
        region_attribution(TinySegmenter(num_classes=2), random_images(1, 4, 4), stripe_mask(1, 2, 4, 4),
                           steps=2, engine="fast")


def test_absent_classes_score_zero_and_empty_mask_gives_zeros():
    segmenter = TinySegmenter(num_classes=3)
    image = random_images(1, 8, 8)
    mask = stripe_mask(1, 3, 8, 8, classes=[1])
    scores = region_attribution(segmenter, image, mask, steps=2)
    assert scores[0, 0] == 0 and scores[0, 2] == 0
    empty = region_attribution(segmenter, image, torch.zeros(1, 3, 8, 8), steps=2)
    assert torch.equal(empty, torch.zeros(1, 3))


def test_weights_are_in_unit_interval_and_sum_to_one():
    segmenter = TinySegmenter(num_classes=3, seed=3)
    ir, vi = random_images(2, 12, 15, seed=4), random_images(2, 12, 15, seed=5)
    mask = _mixed_mask(2, 3, 12, 15)
    w_ir, w_vi = modality_weights(segmenter, ir, vi, mask, steps=3)
    assert w_ir.shape == w_vi.shape == (2, 1, 12, 15)
    assert bool((w_ir >= 0).all() and (w_ir <= 1).all() and (w_vi >= 0).all() and (w_vi <= 1).all())
    torch.testing.assert_close(w_ir + w_vi, torch.ones_like(w_ir))
    assert w_ir.std() > 0  # the weights depend on the region, not a constant 0.5


def test_weights_follow_region_scores():
    segmenter = TinySegmenter(num_classes=3, seed=3)
    ir, vi = random_images(1, 10, 12, seed=4), random_images(1, 10, 12, seed=5)
    mask = stripe_mask(1, 3, 10, 12)
    w_ir, _ = modality_weights(segmenter, ir, vi, mask, steps=3, eps=1e-8)
    score_ir = reference_region_attribution(segmenter, ir, mask, 3)
    score_vi = reference_region_attribution(segmenter, vi, mask, 3)
    for c in range(3):
        region = mask[0, c] > 0.5
        expected = (score_ir[0, c] + 1e-8) / (score_ir[0, c] + score_vi[0, c] + 2e-8)
        torch.testing.assert_close(w_ir[0, 0][region], expected.expand(int(region.sum())), rtol=1e-4, atol=1e-5)


def test_weights_of_one_image_do_not_depend_on_the_others():
    # BatchNorm in train mode would couple the images; attribution must run in eval mode.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a random segmenter with positive region scores in both images (not all 0.5)
        segmenter = create_segmenter("Unet", "mobilenet_v2", num_classes=3, encoder_depth=3,
                                     decoder_channels=(16, 8, 8))
    segmenter.train()
    ir, vi = random_images(2, 20, 24, seed=6), random_images(2, 20, 24, seed=7)
    mask = _mixed_mask(2, 3, 20, 24)
    w_ir, _ = modality_weights(segmenter, ir, vi, mask, steps=2)
    changed_ir = ir.clone()
    changed_ir[1] = random_images(1, 20, 24, seed=8)[0]
    changed_w_ir, _ = modality_weights(segmenter, changed_ir, vi, mask, steps=2)
    torch.testing.assert_close(changed_w_ir[0], w_ir[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(changed_w_ir[1], w_ir[1])
    alone_w_ir, _ = modality_weights(segmenter, ir[:1], vi[:1], mask[:1], steps=2)
    torch.testing.assert_close(alone_w_ir[0], w_ir[0], rtol=1e-5, atol=1e-6)
    assert segmenter.training


@pytest.mark.parametrize("engine", ["reverse", "forward", "captum"])
def test_segmenter_mode_and_requires_grad_are_restored_and_no_grads_accumulate(engine):
    segmenter = TinySegmenter(num_classes=3, batch_norm=True)
    segmenter.train()
    segmenter.head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in segmenter.parameters()]
    running_mean = segmenter.norm.running_mean.clone()
    modality_weights(segmenter, random_images(2, 8, 8), random_images(2, 8, 8, 1), stripe_mask(2, 3, 8, 8), steps=2,
                     engine=engine)
    assert segmenter.training
    assert [p.requires_grad for p in segmenter.parameters()] == flags
    assert all(p.grad is None for p in segmenter.parameters())
    assert torch.equal(segmenter.norm.running_mean, running_mean)  # eval mode: statistics untouched
    segmenter.eval()
    modality_weights(segmenter, random_images(1, 8, 8), random_images(1, 8, 8, 1), stripe_mask(1, 3, 8, 8), steps=2)
    assert not segmenter.training


@pytest.mark.parametrize("engine", ["reverse", "forward", "captum"])
def test_attribution_works_without_gradients_enabled(engine):
    segmenter = TinySegmenter(num_classes=3)
    ir, vi, mask = random_images(1, 8, 9), random_images(1, 8, 9, 1), stripe_mask(1, 3, 8, 9)
    expected = modality_weights(segmenter, ir, vi, mask, steps=2, engine=engine)[0]
    with torch.no_grad():
        no_grad = modality_weights(segmenter, ir, vi, mask, steps=2, engine=engine)[0]
    with torch.inference_mode():
        inference = modality_weights(segmenter, ir.clone(), vi.clone(), mask.clone(), steps=2, engine=engine)[0]
    torch.testing.assert_close(no_grad, expected)
    torch.testing.assert_close(inference.clone(), expected)


def test_bad_arguments_raise_clear_errors():
    segmenter = TinySegmenter(num_classes=3)
    image, mask = random_images(1, 8, 8), stripe_mask(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="method"):
        region_attribution(segmenter, image, mask, steps=2, method="simpson")
    with pytest.raises(ConfigError, match="at least 2"):
        region_attribution(segmenter, image, mask, steps=1)
    with pytest.raises(DataError, match="mask"):
        region_attribution(segmenter, image, mask[:, :, :4], steps=2)
    one = region_attribution(segmenter, image, mask, steps=1, method="gausslegendre")
    assert one.shape == (1, 3)


def test_labels_to_one_hot_marks_ignored_pixels_as_no_class():
    labels = torch.tensor([[[0, 1], [255, 2]]])
    one_hot = labels_to_one_hot(labels, 3, ignore_index=255)
    assert one_hot.shape == (1, 3, 2, 2)
    assert one_hot[0, :, 1, 0].sum() == 0
    assert one_hot[0, 2, 1, 1] == 1 and one_hot[0, 1, 0, 1] == 1
    with pytest.raises(DataError, match="outside"):
        labels_to_one_hot(torch.tensor([[[0, 7]]]), 3)


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
def test_cache_hits_misses_and_returns_the_computed_weights():
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(2, 12, 14, seed=1), random_images(2, 12, 14, seed=2)
    mask = _mixed_mask(2, 3, 12, 14)
    cache = WeightCache(steps=2)
    w_ir, w_vi = cache.get_or_compute(["a", "b"], ir, vi, mask, segmenter)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)
    expected_ir, expected_vi = modality_weights(segmenter, ir, vi, mask, steps=2)
    torch.testing.assert_close(w_ir, expected_ir)
    torch.testing.assert_close(w_vi, expected_vi)
    again_ir, _ = cache.get_or_compute(["b", "a"], ir.flip(0), vi.flip(0), mask.flip(0), segmenter)
    assert (cache.hits, cache.misses) == (2, 2)
    torch.testing.assert_close(again_ir, w_ir.flip(0))


def test_cropped_weights_equal_crops_of_full_weights():
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(2, 15, 19, seed=3), random_images(2, 15, 19, seed=4)
    mask = _mixed_mask(2, 3, 15, 19)
    full_ir, full_vi = modality_weights(segmenter, ir, vi, mask, steps=2)
    cache = WeightCache(steps=2)
    boxes = [(2, 3, 8, 9), (7, 10, 8, 9)]
    crop_ir, crop_vi = cache.get_or_compute(["x", "y"], ir, vi, mask, segmenter, crop_boxes=boxes)
    assert crop_ir.shape == (2, 1, 8, 9)
    for index, (top, left, height, width) in enumerate(boxes):
        torch.testing.assert_close(crop_ir[index], full_ir[index, :, top:top + height, left:left + width])
        torch.testing.assert_close(crop_vi[index], full_vi[index, :, top:top + height, left:left + width])
    # The contract's short form passes the boxes positionally after the segmenter.
    positional_ir, _ = cache.get_or_compute(["x", "y"], ir, vi, mask, segmenter, boxes)
    torch.testing.assert_close(positional_ir, crop_ir)
    # Full images of different sizes may come as a list.
    cache.get_or_compute(["z"], [ir[0, :, :12]], [vi[0, :, :12]], [mask[0, :, :12]], segmenter,
                         crop_boxes=[(0, 0, 8, 9)])
    with pytest.raises(DataError, match="outside"):
        cache.get_or_compute(["x"], ir[:1], vi[:1], mask[:1], segmenter, crop_boxes=[(10, 0, 8, 9)])


def test_cache_is_invalidated_when_the_segmenter_changes():
    segmenter = TinySegmenter(num_classes=3)
    ir, vi = random_images(1, 10, 10, seed=1), random_images(1, 10, 10, seed=2)
    mask = stripe_mask(1, 3, 10, 10)
    cache = WeightCache(steps=2)
    before, _ = cache.get_or_compute(["a"], ir, vi, mask, segmenter)
    cache.get_or_compute(["a"], ir, vi, mask, segmenter)
    assert (cache.hits, cache.misses, cache.invalidations) == (1, 1, 0)
    with torch.no_grad():  # an optimiser step is an in-place update
        segmenter.head.weight.mul_(-1.0)
    after, _ = cache.get_or_compute(["a"], ir, vi, mask, segmenter)
    assert (cache.hits, cache.misses, cache.invalidations) == (1, 2, 1)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, modality_weights(segmenter, ir, vi, mask, steps=2)[0])
    # Loading other weights (a copy) is detected too; loading identical weights is not a change.
    other = TinySegmenter(num_classes=3, seed=9)
    segmenter.load_state_dict(other.state_dict())
    cache.get_or_compute(["a"], ir, vi, mask, segmenter)
    assert cache.misses == 3
    segmenter.load_state_dict(other.state_dict())
    cache.get_or_compute(["a"], ir, vi, mask, segmenter)
    assert cache.misses == 3 and cache.hits == 2
    # Another attribution setting does not reuse entries either.
    cache.get_or_compute(["a"], ir, vi, mask, segmenter, steps=3)
    assert cache.misses == 4


def test_fingerprint_depends_on_values():
    first, second = TinySegmenter(seed=0), TinySegmenter(seed=0)
    assert segmenter_fingerprint(first) == segmenter_fingerprint(second)
    with torch.no_grad():
        second.head.bias[0] += 1e-6
    assert segmenter_fingerprint(first) != segmenter_fingerprint(second)


# ---------------------------------------------------------------------------------------------
# Pathway attention
# ---------------------------------------------------------------------------------------------
def test_pathway_attention_is_gradient_times_step_with_running_mean():
    segmenter = TinySegmenter(num_classes=3)
    segmenter.train()
    mask = stripe_mask(2, 3, 9, 11)
    previous = random_images(2, 9, 11, seed=1)
    estimate = random_images(2, 9, 11, seed=2)
    point = estimate.clone().requires_grad_(True)
    segmenter.eval()
    (gradient,) = torch.autograd.grad((segmenter(point) * mask).sum(), point)
    segmenter.train()
    with torch.no_grad():
        first = pathway_attention(segmenter, estimate, previous, mask)
    torch.testing.assert_close(first, gradient * (estimate - previous))
    second = pathway_attention(segmenter, estimate, previous, mask, running_mean=torch.ones_like(first), stage=2)
    torch.testing.assert_close(second, (1.0 + first) / 2)
    assert segmenter.training
    assert all(p.grad is None for p in segmenter.parameters())
    assert all(p.requires_grad for p in segmenter.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attribution_on_cuda_matches_cpu():
    segmenter = TinySegmenter(num_classes=4, seed=1)
    ir, vi = random_images(2, 16, 20, seed=1), random_images(2, 16, 20, seed=2)
    mask = _mixed_mask(2, 4, 16, 20)
    cpu_ir, _ = modality_weights(segmenter, ir, vi, mask, steps=3)
    cuda_ir, _ = modality_weights(segmenter.cuda(), ir.cuda(), vi.cuda(), mask.cuda(), steps=3, internal_batch_size=4)
    assert cuda_ir.is_cuda
    torch.testing.assert_close(cuda_ir.cpu(), cpu_ir, rtol=1e-3, atol=1e-4)
    cache = WeightCache(steps=3)
    cached_ir, _ = cache.get_or_compute(["a", "b"], ir.cuda(), vi.cuda(), mask.cuda(), segmenter)
    assert cached_ir.is_cuda
    torch.testing.assert_close(cached_ir.cpu(), cpu_ir, rtol=1e-3, atol=1e-4)


def test_scaled_attribution_uses_region_scores_of_the_resized_images():
    segmenter = TinySegmenter(num_classes=3, seed=3)
    ir, vi = random_images(1, 16, 20, seed=4), random_images(1, 16, 20, seed=5)
    mask = stripe_mask(1, 3, 16, 20)
    w_ir, w_vi = modality_weights(segmenter, ir, vi, mask, steps=3, scale=0.5)
    assert w_ir.shape == (1, 1, 16, 20)
    torch.testing.assert_close(w_ir + w_vi, torch.ones_like(w_ir))
    small = torch.nn.functional.interpolate(torch.cat([ir, vi]), size=(8, 10), mode="area")
    small_mask = torch.nn.functional.interpolate(mask, size=(8, 10), mode="area") > 0
    expected = reference_region_attribution(segmenter, small, small_mask.float().repeat(2, 1, 1, 1), 3)
    for c in range(3):
        region = mask[0, c] > 0.5
        weight = (expected[0, c] + 1e-8) / (expected[0, c] + expected[1, c] + 2e-8)
        torch.testing.assert_close(w_ir[0, 0][region], weight.expand(int(region.sum())), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="attribution.scale"):
        modality_weights(segmenter, ir, vi, mask, steps=3, scale=0.0)
