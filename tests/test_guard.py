"""The infrared guard (``uaafusion/guard.py``): region, alpha, the guarded image, and its settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uaafusion.guard import DEFAULT_RADIUS, DEFAULT_SIGMA, GUARD_GAIN, Guard, gaussian_blur, grow, guard_from_spec

PERSON = 2


class BrightIsPerson(nn.Module):
    """A three-class segmenter by rule: a pixel above 0.5 is a person (class 2), else background."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        person = (image - 0.5) * 20.0
        return torch.cat((-person, torch.full_like(image, -100.0), person), dim=1)


def test_grow_makes_a_diamond_of_the_radius() -> None:
    mask = torch.zeros(1, 1, 31, 31)
    mask[0, 0, 15, 15] = 1.0
    grown = grow(mask, 5)
    rows, columns = torch.meshgrid(torch.arange(31), torch.arange(31), indexing="ij")
    diamond = ((rows - 15).abs() + (columns - 15).abs() <= 5).float()
    assert torch.equal(grown[0, 0], diamond)
    assert torch.equal(grow(mask, 0), mask)


def test_gaussian_blur_keeps_flat_images_and_spreads_a_step_symmetrically() -> None:
    flat = torch.full((1, 1, 20, 30), 0.3)
    assert torch.allclose(gaussian_blur(flat, 4.0), flat, atol=1e-6)
    step = torch.zeros(1, 1, 1, 101)
    step[..., 50:] = 1.0
    blurred = gaussian_blur(step, 5.0)[0, 0, 0]
    assert blurred[0] == 0 and blurred[-1] == 1          # 4 sigma away the step is not felt
    assert torch.allclose(blurred[49] + blurred[50], torch.tensor(1.0), atol=1e-6)  # symmetric about the edge
    assert bool((blurred[1:] >= blurred[:-1] - 1e-7).all())


def test_region_is_a_guarded_class_on_fused_and_background_on_infrared() -> None:
    guard = Guard((PERSON,))
    fused_classes = torch.tensor([[[PERSON, PERSON, 1, 0]]])
    ir_classes = torch.tensor([[[0, PERSON, 0, 0]]])
    assert guard.region(fused_classes, ir_classes).tolist() == [[[True, False, False, False]]]


def test_the_guard_returns_a_false_person_to_the_infrared_image_and_leaves_true_ones_and_far_pixels() -> None:
    """A bright patch only the fused image has goes back to the cold infrared pixels; a patch both
    images share (a warm person) and pixels beyond radius + 4 sigma are left exactly as fused."""
    segmenter = BrightIsPerson()
    ir = torch.full((1, 1, 64, 160), 0.2)
    ir[..., 20:30, 120:130] = 0.9            # a warm person, on both images
    fused = torch.full((1, 1, 64, 160), 0.3)
    fused[..., 20:30, 20:30] = 0.8           # a bright texture the infrared image does not have
    fused[..., 20:30, 120:130] = 0.7
    guard = Guard((PERSON,), radius=4, sigma=3.0)
    guarded, alpha = guard.apply(fused, ir, segmenter)
    assert guarded.shape == alpha.shape == fused.shape
    assert torch.allclose(guarded[..., 20:30, 20:30], ir[..., 20:30, 20:30])     # alpha 1 on the region
    assert float(alpha[..., 20:30, 20:30].min()) == 1.0
    assert torch.equal(guarded[..., 120:130], fused[..., 120:130])                # the true person stays
    reach = 4 + int(4 * 3.0 + 0.5)
    assert torch.equal(guarded[..., 30 + reach + 1:, :], fused[..., 30 + reach + 1:, :])
    assert float(alpha.max()) == 1.0 and float(alpha.min()) == 0.0
    assert not bool((segmenter(guarded).argmax(1) == PERSON)[..., :, :100].any())  # the false person is gone
    # The fade: between the region and the untouched pixels, alpha falls monotonically.
    profile = alpha[0, 0, 25, 30:30 + reach + 1]
    assert bool((profile[1:] <= profile[:-1] + 1e-7).all()) and float(profile[-1]) < 1.0


def test_region_with_missed_also_takes_guarded_objects_the_fused_image_lost() -> None:
    fused_classes = torch.tensor([[[PERSON, 0, 1, PERSON, 0]]])
    ir_classes = torch.tensor([[[0, PERSON, PERSON, PERSON, 0]]])
    assert Guard((PERSON,)).region(fused_classes, ir_classes).tolist() == [[[True, False, False, False, False]]]
    assert Guard((PERSON,), missed=True).region(fused_classes, ir_classes).tolist() == [[[True, True, True, False, False]]]


def test_missed_brings_back_a_warm_person_the_fused_image_washed_out() -> None:
    segmenter = BrightIsPerson()
    ir = torch.full((1, 1, 48, 48), 0.2)
    ir[..., 20:28, 20:28] = 0.9
    fused = torch.full((1, 1, 48, 48), 0.3)
    fused[..., 20:28, 20:28] = 0.45          # the person, dimmed below what the segmenter calls a person
    unchanged, _ = Guard((PERSON,), radius=2, sigma=1.0).apply(fused, ir, segmenter)
    assert torch.equal(unchanged, fused)
    restored, alpha = Guard((PERSON,), radius=2, sigma=1.0, missed=True).apply(fused, ir, segmenter)
    assert torch.allclose(restored[..., 20:28, 20:28], ir[..., 20:28, 20:28])
    assert bool((segmenter(restored).argmax(1) == PERSON)[..., 20:28, 20:28].all())


class BrightIsPersonMidIsCar(nn.Module):
    """A four-class segmenter by rule: above 0.75 a person (class 2), 0.55-0.75 a car (class 3), else background."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        person = (image - 0.75) * 200.0
        car = torch.minimum(image - 0.55, 0.75 - image) * 200.0
        return torch.cat((torch.zeros_like(image), torch.full_like(image, -100.0), person, car), dim=1)


def test_keep_leaves_a_car_beside_a_false_person_as_fused() -> None:
    """The return to infrared around a false person spreads over a car next to it; with the car
    kept, the car's pixels stay exactly as fused and the false person still goes back to infrared."""
    segmenter = BrightIsPersonMidIsCar()
    ir = torch.full((1, 1, 48, 96), 0.2)
    fused = torch.full((1, 1, 48, 96), 0.3)
    fused[..., 20:28, 20:28] = 0.9           # a false person
    fused[..., 20:28, 31:45] = 0.65          # a car 3 pixels to its right, which the infrared image does not show
    spread, spread_alpha = Guard((PERSON,), radius=4, sigma=3.0).apply(fused, ir, segmenter)
    assert float(spread_alpha[..., 20:28, 31].min()) > 0.5         # without keep the car's left edge goes cold
    kept, kept_alpha = Guard((PERSON,), radius=4, sigma=3.0, keep=(3,)).apply(fused, ir, segmenter)
    assert torch.equal(kept[..., 20:28, 31:45], fused[..., 20:28, 31:45])
    assert float(kept_alpha[..., 20:28, 31:45].max()) == 0.0
    assert torch.allclose(kept[..., 20:28, 20:28], ir[..., 20:28, 20:28])
    off_car = torch.ones_like(fused, dtype=torch.bool)
    off_car[..., 20:28, 31:45] = False
    assert torch.equal(kept_alpha[off_car], spread_alpha[off_car])   # keep_sigma 0: nothing else changes


def test_keep_sigma_fades_the_kept_region_outwards() -> None:
    fused_classes = torch.zeros(1, 30, 30, dtype=torch.int64)
    fused_classes[0, 10:20, 10:20] = 3
    hard = Guard((PERSON,), keep=(3,)).kept(fused_classes)
    assert torch.equal(hard[:, 0].bool(), fused_classes == 3)
    soft = Guard((PERSON,), keep=(3,), keep_sigma=2.0).kept(fused_classes)
    assert float(soft[0, 0, 10:20, 10:20].min()) == 1.0                  # the car itself is fully kept
    assert 0.0 < float(soft[0, 0, 15, 8]) < 1.0 and float(soft[0, 0, 15, 0]) == 0.0
    assert float(Guard((PERSON,)).kept(fused_classes).max()) == 0.0      # no keep: nothing kept


def test_a_person_on_infrared_inside_a_fused_car_is_not_kept() -> None:
    """Where the fused image shows a car and the infrared image a person (a person the fusion lost
    into a car), the infrared person wins: ``missed`` returns it, ``keep`` does not hold it back."""
    fused_classes = torch.tensor([[[3, 3, 3, 0]]])
    ir_classes = torch.tensor([[[0, PERSON, 3, 0]]])
    guard = Guard((PERSON,), radius=0, sigma=0.0, missed=True, keep=(3,))
    assert guard.kept(fused_classes, ir_classes)[0, 0].tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert guard.kept(fused_classes)[0, 0].tolist() == [[1.0, 1.0, 1.0, 0.0]]   # without the infrared classes
    fused, ir = torch.full((1, 1, 1, 4), 0.6), torch.full((1, 1, 1, 4), 0.1)
    guarded, alpha = guard.guarded(fused, ir, fused_classes, ir_classes)
    assert alpha[0, 0].tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert torch.allclose(guarded[0, 0, 0], torch.tensor([0.6, 0.1, 0.6, 0.6]))


@pytest.mark.parametrize("gain", [GUARD_GAIN, 1.0, 2.0])
def test_alpha_is_the_gained_blur_of_the_grown_region(gain: float) -> None:
    region = torch.zeros(1, 40, 40, dtype=torch.bool)
    region[0, 18:22, 18:22] = True
    guard = Guard((1,), radius=2, sigma=2.0, gain=gain)
    expected = (gain * gaussian_blur(grow(region[:, None].float(), 2), 2.0)).clamp(0, 1)
    assert torch.equal(guard.alpha(region), expected)


def test_a_larger_gain_returns_more_of_the_fade_to_infrared() -> None:
    region = torch.zeros(1, 40, 40, dtype=torch.bool)
    region[0, 18:22, 18:22] = True
    gentle, full = (Guard((1,), radius=2, sigma=2.0, gain=gain).alpha(region) for gain in (1.0, 2.0))
    assert bool((full >= gentle).all()) and float(full.sum()) > float(gentle.sum())
    assert float(full[0, 0, 20, 20]) == 1.0 and float(gentle[0, 0, 20, 20]) < 1.0


def test_sigma_zero_is_a_hard_edge_at_the_grown_region() -> None:
    region = torch.zeros(1, 20, 20, dtype=torch.bool)
    region[0, 9:11, 9:11] = True
    alpha = Guard((1,), radius=3, sigma=0.0).alpha(region)
    assert torch.equal(alpha, grow(region[:, None].float(), 3))


@pytest.mark.parametrize(("arguments", "message"), [
    (((),), "non-empty"), (((0,),), "background"), (((1,), -1), "radius"), (((1,), 4, -1.0), "sigma"),
    (((1,), 4, 2.0, False, 0.0), "gain"), (((1,), 4, 2.0, False, 1.5, (0,)), "keep classes"),
    (((1,), 4, 2.0, False, 1.5, (1,)), "both guarded and kept"), (((1,), 4, 2.0, False, 1.5, (3,), -1.0), "keep sigma"),
])
def test_bad_guard_settings_are_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Guard(*arguments)


def test_guard_from_spec_is_none_without_classes() -> None:
    assert guard_from_spec([]) is None
    assert guard_from_spec([1, 3], 8, 4, 1) == Guard((1, 3), 8, 4.0, missed=True)


def test_params_the_cli_and_the_model_share_the_guards_defaults() -> None:
    from uaafusion.cli import build_parser
    from uaafusion.config import FusionModelConfig
    from uaafusion.models import create_fusion_model

    fusion = FusionModelConfig()
    assert (fusion.guard_radius, fusion.guard_sigma) == (DEFAULT_RADIUS, DEFAULT_SIGMA)
    args = build_parser().parse_args(["fuse", "--ir", "a.png", "--vi", "b.png", "--out", "c.png"])
    assert (args.guard_radius, args.guard_sigma) == (DEFAULT_RADIUS, DEFAULT_SIGMA)
    spec = create_fusion_model("uaafusion", stages=1, features=4).spec
    assert (spec["guard_radius"], spec["guard_sigma"]) == (DEFAULT_RADIUS, DEFAULT_SIGMA)
    assert (Guard((1,)).radius, Guard((1,)).sigma) == (DEFAULT_RADIUS, DEFAULT_SIGMA)
