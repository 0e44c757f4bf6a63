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


def _short_run(root: Path, *settings: str) -> tuple[Path, Path, Path, dict]:
    """Three pairs under ``root``, 60 steps of the oracle with ``settings``: (ir, vi, work folders, record).
    Checks that every image's scores are those of the PNG it wrote."""
    ir_dir, vi_dir = _write_pairs(root, 3)
    out, work = root / "oracle.json", root / "work"
    assert main(["--ir", str(ir_dir), "--vi", str(vi_dir), *settings, "--steps", "60", "--lr", "2",
                 "--work", str(work), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    for name, image_scores in record["per_image"].items():
        written = read_image(work / f"{name}.png").astype(np.float64)
        ir_image, vi_image = (read_image(folder / f"{name}.png").astype(np.float64) for folder in (ir_dir, vi_dir))
        assert image_scores["oracle"] == pytest.approx(score(written, ir_image, vi_image))
    return ir_dir, vi_dir, work, record


def test_a_short_run_raises_the_worst_margin_and_records_reference_metrics(tmp_path: Path) -> None:
    _, _, _, record = _short_run(tmp_path, "--every", "2", "--batch", "1")
    assert sorted(record["per_image"]) == ["pair0", "pair2"]  # every 2nd pair
    for name, image_scores in record["per_image"].items():
        worst = record["worst_margin_every_50_steps"][name]
        assert len(worst) == 3 and worst[-1] > worst[0]  # steps 0, 50, 60; the optimisation helps
        ir_image, vi_image = (read_image(tmp_path / kind / f"{name}.png").astype(np.float64) for kind in ("ir", "vi"))
        assert image_scores["start"] == pytest.approx(score(rounded((ir_image + vi_image) / 4 + np.maximum(
            ir_image, vi_image) / 2), ir_image, vi_image))
    summary = record["summary"]
    assert summary["images"] == 2 and set(summary["mean"]) == {"average", "maximum", "start", "oracle"}
    assert record["settings"]["steps"] == 60


def test_the_mean_aim_raises_the_worst_margin_of_the_means_over_all_pairs(tmp_path: Path) -> None:
    ir_dir, vi_dir, work, record = _short_run(tmp_path, "--aim", "mean", "--batch", "2")  # two batches
    assert record["settings"]["aim"] == "mean" and sorted(record["per_image"]) == ["pair0", "pair1", "pair2"]
    trace = record["margins_of_the_means_every_50_steps"]
    assert len(trace) == 3 and set(trace[0]) == set(TARGET_METRICS)  # steps 0, 50, 60
    assert min(trace[-1].values()) > min(trace[0].values())  # the worst metric of the means improved
    means = record["summary"]["mean"]
    baseline_means = {name: means[name] for name in ("average", "maximum")}
    for metric in TARGET_METRICS:  # the trace's margins are those of the means (float32, before rounding)
        measured = (means["oracle"][metric] - targets(baseline_means)[metric]) / scales(baseline_means)[metric]
        assert trace[-1][metric] == pytest.approx(measured, abs=0.05)

    # A later run can start where this one ended (--start-from its --work folder).
    again = tmp_path / "again.json"
    assert main(["--ir", str(ir_dir), "--vi", str(vi_dir), "--aim", "mean", "--steps", "0", "--start-from", str(work),
                 "--work", str(tmp_path / "again"), "--out", str(again)]) == 0
    continued = json.loads(again.read_text())
    assert continued["settings"]["start_from"] == str(work)
    for name, image_scores in continued["per_image"].items():
        assert image_scores["start"] == pytest.approx(record["per_image"][name]["oracle"])
    (work / "pair1.png").unlink()
    with pytest.raises(SystemExit, match="pair1"):
        main(["--ir", str(ir_dir), "--vi", str(vi_dir), "--start-from", str(work), "--out", str(again)])


@pytest.mark.parametrize("argument", [["--every", "0"], ["--start", "1.5"], ["--temperature", "0"], ["--aim", "median"]])
def test_bad_settings_are_refused_by_name(argument: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(argument)
    assert argument[0] in capsys.readouterr().err
