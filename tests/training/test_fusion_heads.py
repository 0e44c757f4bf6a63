"""Every fusion head of the registry through the product: trained by the training stages on the tiny
synthetic configuration, exported, and fusing a colour pair of an odd size with the Fuser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tiny_params_dict
from uaafusion.config import params_from_dict

HEADS = ("alpha_blend", "mask_guided", "prompt")


@pytest.mark.parametrize("name", HEADS)
def test_a_head_trains_exports_and_fuses(name: str, tiny_data: Path, tmp_path: Path) -> None:
    from uaafusion.fuser import Fuser
    from uaafusion.training import export_models, read_history, run_training

    params = params_from_dict(tiny_params_dict(**{"data.root": str(tiny_data), "model.fusion.name": name}))
    metrics = run_training(params, tmp_path / "run")
    assert np.isfinite(metrics["VIF"]) and "mIoU" in metrics
    fusion_losses = [row["loss"] for row in read_history(tmp_path / "run")["steps"] if row["stage"] == "round-1/fusion"]
    assert fusion_losses and all(np.isfinite(fusion_losses))
    fuser = Fuser.from_checkpoint(export_models(params, tmp_path / "run", tmp_path / "uaafusion.pt"), device="cpu")
    assert fuser.fusion.spec["name"] == name
    generator = np.random.default_rng(0)
    image = fuser.fuse(generator.integers(0, 256, (45, 61), dtype=np.uint8),
                       generator.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    assert image.shape == (45, 61, 3) and image.dtype == np.uint8


def test_the_report_shows_a_heads_own_map(tiny_data: Path, tmp_path: Path) -> None:
    from uaafusion.paths import ProjectPaths
    from uaafusion.report.samples import sample_panels
    from uaafusion.training import export_models, run_stage

    params = params_from_dict(tiny_params_dict(**{"data.root": str(tiny_data), "model.fusion.name": "alpha_blend",
                                                  "report.samples": 1}))
    paths = ProjectPaths.at(tmp_path, params.outputs)
    run_stage(params, tmp_path / "run", "pretrain", 0)
    export_models(params, tmp_path / "run", paths.model_checkpoint)
    (panels,) = list(sample_panels(params, paths, notes=[]))
    titles = [title for title, picture in panels.titled() if picture is not None]
    assert "alpha (0–1)" in titles and titles.index("alpha (0–1)") < titles.index("segmentation (fused)")


def test_the_prompt_head_learns_the_kind_each_degraded_crop_was_given(tiny_data: Path, tmp_path: Path) -> None:
    from uaafusion.training import read_history, run_stage

    params = params_from_dict(tiny_params_dict(**{
        "data.root": str(tiny_data), "model.fusion.name": "prompt", "degrade.kinds": ["noise", "ir_stripes"],
        "degrade.probability": 0.75}))
    run_stage(params, tmp_path / "run", "pretrain", 0)
    run_stage(params, tmp_path / "run", "fusion", 1)
    steps = [row for row in read_history(tmp_path / "run")["steps"] if row["stage"] == "round-1/fusion"]
    assert steps and all(np.isfinite(row["loss_degradation"]) and row["loss_degradation"] > 0 for row in steps)
    assert any(row["degraded_noise"] + row["degraded_ir_stripes"] > 0 for row in steps)
