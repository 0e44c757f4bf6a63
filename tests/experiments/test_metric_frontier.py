"""``experiments/metric_frontier.py``: the handmade fusions and the comparison with the pixel baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments.metric_frontier import (
    CANDIDATES,
    FEATHER_SIGMA,
    MODEL_CANDIDATES,
    blend,
    collapse_pyramid,
    compare_with_baselines,
    gaussian_blur,
    laplacian_pyramid,
    main,
    pyramid_fusion,
)
from uaafusion.config import Params
from uaafusion.models import save_models
from uaafusion.training.builders import build_models, model_spec


@pytest.mark.parametrize("size", [(37, 50), (64, 64), (9, 13)])
def test_pyramid_collapses_back_to_the_image(size: tuple[int, int]) -> None:
    image = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    pyramid = laplacian_pyramid(image, levels=3)
    assert len(pyramid) == 4 and pyramid[-1].shape[-2:] == ((size[0] + 7) // 8, (size[1] + 7) // 8)
    torch.testing.assert_close(collapse_pyramid(pyramid), image, atol=1e-6, rtol=0)


@pytest.mark.parametrize("base", ["average", "maximum"])
def test_pyramid_fusion_of_one_image_with_itself_is_that_image(base: str) -> None:
    image = torch.rand(1, 1, 40, 56, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pyramid_fusion(image, image, base), image, atol=1e-6, rtol=0)


def test_pyramid_fusion_keeps_the_stronger_sources_edges() -> None:
    """An edge present in one source only keeps (nearly) its full contrast; the average halves it."""
    ir = torch.full((1, 1, 64, 64), 0.2)
    ir[..., 20:44, 20:44] = 0.9  # a warm square
    vi = torch.full((1, 1, 64, 64), 0.5)
    vi[..., :, 48:] = 0.6  # a faint edge elsewhere
    fused = pyramid_fusion(ir, vi, "average")
    contrast = float(fused[..., 32, 32] - fused[..., 32, 10])
    average_contrast = float(((ir + vi) / 2)[..., 32, 32] - ((ir + vi) / 2)[..., 32, 10])
    assert contrast > 0.5 and average_contrast == pytest.approx(0.35)
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0


def test_blend_ends_are_the_pixel_baselines() -> None:
    generator = torch.Generator().manual_seed(2)
    ir, vi = torch.rand(1, 1, 8, 8, generator=generator), torch.rand(1, 1, 8, 8, generator=generator)
    torch.testing.assert_close(blend(0.0)(ir, vi), (ir + vi) / 2)
    torch.testing.assert_close(blend(1.0)(ir, vi), torch.maximum(ir, vi))
    torch.testing.assert_close(CANDIDATES["blend-0.5"](ir, vi), ((ir + vi) / 2 + torch.maximum(ir, vi)) / 2)


def test_a_candidate_must_beat_both_baselines_on_each_metric() -> None:
    means = {
        "average": {"VIF": 0.7, "Qabf": 0.4, "SSIM": 1.5},
        "maximum": {"VIF": 1.0, "Qabf": 0.7, "SSIM": 1.4},
        "good": {"VIF": 1.1, "Qabf": 0.8, "SSIM": 1.6},
        "between": {"VIF": 0.9, "Qabf": 0.8, "SSIM": 1.45},
    }
    summary = compare_with_baselines(means)
    assert summary["good"]["beats_both_on_all_three"]
    assert summary["between"]["beats_both_baselines"] == {"VIF": False, "Qabf": True, "SSIM": False}
    assert not summary["between"]["beats_both_on_all_three"]
    # A baseline is compared with the other one only.
    assert summary["average"]["beats_both_baselines"] == {"VIF": False, "Qabf": False, "SSIM": True}


def test_scores_every_candidate_with_the_evaluation(tiny_project: tuple[Path, Params], tmp_path: Path) -> None:
    params_file, params = tiny_project
    fusion, segmenter = build_models(params, torch.device("cpu"))
    checkpoint = save_models(tmp_path / "models" / "uaafusion.pt", fusion, segmenter, model_spec(params))
    out = tmp_path / "frontier.json"
    assert main(["--params", str(params_file), "--checkpoint", str(checkpoint), "--work", str(tmp_path / "work"),
                 "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    names = {*CANDIDATES, *MODEL_CANDIDATES}
    assert set(document["mean"]) == names and set(document["summary"]) == names
    assert document["images"] == params.synthetic.test
    assert len(list((tmp_path / "work" / "pyramid").glob("*.png"))) == params.synthetic.test
    for mean in document["mean"].values():
        assert 0.0 <= mean["mIoU"] <= 1.0 and mean["SSIM"] <= 2.0
    for name, summary in document["summary"].items():
        assert summary["SSIM"] == document["mean"][name]["SSIM"]
    # Different rules, different files (the pyramid keeps details the average halves).
    pyramid = sorted((tmp_path / "work" / "pyramid").glob("*.png"))
    average = sorted((tmp_path / "work" / "average").glob("*.png"))
    assert [path.name for path in pyramid] == [path.name for path in average]
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(pyramid, average))


def test_model_candidates_take_the_model_apart(tiny_project: tuple[Path, Params]) -> None:
    """``ours`` is what inference makes; the attribution target is ``w_I I + w_V V``; the uniform
    variant is the same network with the same mask and ``w_I = w_V = 1/2``."""
    from experiments.metric_frontier import model_candidates
    from uaafusion.inference import fuse_luma

    _, params = tiny_project
    torch.manual_seed(0)
    fusion, segmenter = build_models(params, torch.device("cpu"))
    generator = torch.Generator().manual_seed(3)
    ir, vi = torch.rand(1, 1, 32, 40, generator=generator), torch.rand(1, 1, 32, 40, generator=generator)
    images = model_candidates(fusion, segmenter, ir, vi)
    assert set(images) == set(MODEL_CANDIDATES)
    with torch.no_grad():
        reference = fuse_luma(fusion, segmenter, ir, vi)
    torch.testing.assert_close(images["ours"], reference.fused)
    torch.testing.assert_close(images["ours-attribution-target"], reference.weight_ir * ir + reference.weight_vi * vi)
    half = torch.full_like(ir, 0.5)
    with torch.no_grad():
        uniform = fusion(ir, vi, segmenter, mask=reference.mask, weights=(half, half)).fused
    torch.testing.assert_close(images["ours-uniform-weights"], uniform)
    feathered_ir = gaussian_blur(reference.weight_ir, FEATHER_SIGMA)
    with torch.no_grad():
        feathered = fusion(ir, vi, segmenter, mask=reference.mask, weights=(feathered_ir, 1 - feathered_ir)).fused
    torch.testing.assert_close(images["ours-feathered-weights"], feathered)
    only_ours = model_candidates(fusion, segmenter, ir, vi, ("ours",))
    assert set(only_ours) == {"ours"}
    torch.testing.assert_close(only_ours["ours"], reference.fused)


def test_gaussian_blur_feathers_a_step_and_keeps_flat_maps() -> None:
    flat = torch.full((1, 1, 30, 40), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 4.0), flat)
    step = torch.zeros(1, 1, 30, 40)
    step[..., 20:] = 1.0
    blurred = gaussian_blur(step, 2.0)
    assert blurred.shape == step.shape
    row = blurred[0, 0, 15]
    assert float(row[0]) == pytest.approx(0.0, abs=1e-6) and float(row[-1]) == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < float(row[19]) < 0.5 < float(row[20]) < 0.7  # the edge is spread over a few pixels
    assert bool((row[1:] >= row[:-1] - 1e-7).all())


def test_only_the_chosen_candidates_and_the_baselines_are_scored(tiny_project: tuple[Path, Params],
                                                                    tmp_path: Path) -> None:
    params_file, _ = tiny_project
    out = tmp_path / "pyramid-only.json"
    assert main(["--params", str(params_file), "--candidates", "pyramid", "--work", str(tmp_path / "work"),
                 "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["mean"]) == {"average", "maximum", "pyramid"}
    with pytest.raises(SystemExit, match="ours-uniform-weights"):  # the model's candidates need --checkpoint
        main(["--params", str(params_file), "--candidates", "ours-uniform-weights", "--out", str(out)])
