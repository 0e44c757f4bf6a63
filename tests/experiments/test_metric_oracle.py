"""``experiments/metric_oracle.py``: targets, the soft worst-margin objective, and a short real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.metric_oracle import TARGET_METRICS, main, objective, rounded, score, scales, targets
from tests.metrics.test_fusion_metrics import smooth_random_image
from uaafusion.data.io import read_image, write_png

BASELINE_SCORES = {
    "average": {"VIF": 0.7, "Qabf": 0.36, "SSIM": 1.47},
    "maximum": {"VIF": 1.0, "Qabf": 0.70, "SSIM": 1.465},
}


def test_targets_are_the_better_baseline_and_scales_their_gap() -> None:
    assert targets(BASELINE_SCORES) == {"VIF": 1.0, "Qabf": 0.70, "SSIM": 1.47}
    gaps = scales(BASELINE_SCORES)
    assert gaps["VIF"] == pytest.approx(0.3) and gaps["Qabf"] == pytest.approx(0.34)
    assert gaps["SSIM"] == 0.01  # a gap of 0.005 is floored at 0.01


def test_objective_margins_are_scaled_distances_to_target_and_the_loss_their_soft_minimum() -> None:
    ir_image, vi_image = smooth_random_image(40, 48, seed=5), smooth_random_image(40, 48, seed=6)
    as_batch = lambda array: torch.tensor(array[None, None], dtype=torch.float64)  # noqa: E731
    fused, ir, vi = as_batch(np.maximum(ir_image, vi_image)), as_batch(ir_image), as_batch(vi_image)
    reference = score(np.maximum(ir_image, vi_image), ir_image, vi_image)
    target = torch.tensor([[reference[metric] - 0.1 for metric in TARGET_METRICS]], dtype=torch.float64)
    scale = torch.tensor([[0.5, 0.25, 0.1]], dtype=torch.float64)
    loss, margins = objective(fused, ir, vi, target, scale, temperature=1e-3)
    torch.testing.assert_close(margins, torch.tensor([[0.2, 0.4, 1.0]], dtype=torch.float64), rtol=0, atol=1e-9)
    assert float(loss) == pytest.approx(-0.2, abs=1e-3)  # minus the worst margin, VIF's


def _write_pairs(root: Path, count: int) -> tuple[Path, Path]:
    for index in range(count):
        write_png(root / "ir" / f"pair{index}.png", smooth_random_image(48, 56, seed=10 + index).astype(np.uint8))
        write_png(root / "vi" / f"pair{index}.png", smooth_random_image(48, 56, seed=20 + index).astype(np.uint8))
    return root / "ir", root / "vi"


def test_a_short_run_raises_the_worst_margin_and_records_reference_metrics(tmp_path: Path) -> None:
    ir_dir, vi_dir = _write_pairs(tmp_path, 3)
    out, work = tmp_path / "oracle.json", tmp_path / "work"
    assert main(["--ir", str(ir_dir), "--vi", str(vi_dir), "--every", "2", "--steps", "60", "--batch", "1",
                 "--lr", "2", "--work", str(work), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert sorted(record["per_image"]) == ["pair0", "pair2"]  # every 2nd pair
    for name, image_scores in record["per_image"].items():
        worst = record["worst_margin_every_50_steps"][name]
        assert len(worst) == 3 and worst[-1] > worst[0]  # steps 0, 50, 60; the optimisation helps
        written = read_image(work / f"{name}.png").astype(np.float64)
        ir_image, vi_image = (read_image(folder / f"{name}.png").astype(np.float64) for folder in (ir_dir, vi_dir))
        assert image_scores["oracle"] == pytest.approx(score(written, ir_image, vi_image))  # the PNG is what was scored
        assert image_scores["start"] == pytest.approx(score(rounded((ir_image + vi_image) / 4 + np.maximum(
            ir_image, vi_image) / 2), ir_image, vi_image))
    summary = record["summary"]
    assert summary["images"] == 2 and set(summary["mean"]) == {"average", "maximum", "start", "oracle"}
    assert record["settings"]["steps"] == 60


@pytest.mark.parametrize("argument", [["--every", "0"], ["--start", "1.5"], ["--temperature", "0"]])
def test_bad_settings_are_refused_by_name(argument: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(argument)
    assert argument[0] in capsys.readouterr().err
