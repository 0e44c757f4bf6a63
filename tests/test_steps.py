"""``uaafusion.steps``: the evaluate step writes to the params' output folders and scores the
generalisation sets (unlabeled pairs fused with the trained model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.fake_project import SAMPLE_NAMES, project_params, write_models, write_tiny_dataset
from uaafusion.config import params_from_dict
from uaafusion.data.io import write_png
from uaafusion.errors import DataError
from uaafusion.metrics.comparison import Comparison, compare_methods
from uaafusion.paths import ProjectPaths
from uaafusion.report import FUSION_METRICS
from uaafusion.steps import evaluate_step

FUSION_KEYS = [metric for metric in FUSION_METRICS if metric != "MI_bits"]


def write_unlabeled_pairs(root: Path, sizes: list[tuple[int, int]]) -> None:
    """RoadScene-like pairs: gray JPEG-free PNG infrared, colour visible, sizes differ per pair."""
    generator = np.random.default_rng(1)
    for index, (height, width) in enumerate(sizes):
        write_png(root / "ir" / f"p{index}.png", generator.integers(0, 255, (height, width), dtype=np.uint8))
        write_png(root / "vi" / f"p{index}.png", generator.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_evaluate_step_writes_to_outputs_and_scores_generalisation_sets(tmp_path: Path) -> None:
    raw = project_params(outputs={"models": "m", "fused": "fused-x", "reports": "rep"})
    raw["evaluate"] = {"peers": {}, "generalisation": {"roadlike": "data/roadlike", "tnolike": str(tmp_path / "tno")}}
    params = params_from_dict(raw)
    paths = ProjectPaths.at(tmp_path, params.outputs)
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_unlabeled_pairs(tmp_path / "data" / "roadlike", [(33, 47), (40, 40)])
    write_unlabeled_pairs(tmp_path / "tno", [(36, 30)])
    write_models(paths.model_checkpoint)

    means = evaluate_step(params, paths)

    assert set(means) == {"ours", "average", "maximum"}
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text()) == means
    # The one comparison the report and MLflow read: ours against each baseline, with intervals.
    evaluation = json.loads((tmp_path / "rep" / "evaluation.json").read_text())
    comparison = Comparison.from_json(json.loads((tmp_path / "rep" / "comparison.json").read_text()))
    assert comparison.to_json() == compare_methods(evaluation, "ours", skip_unpaired=True).to_json()
    assert set(comparison.against) == {"average", "maximum"} and "VIF" in comparison.against["average"]
    for name in SAMPLE_NAMES:
        assert (tmp_path / "fused-x" / "ours" / f"{name}.png").is_file()
    generalisation = json.loads((tmp_path / "rep" / "generalisation.json").read_text())
    assert set(generalisation) == {"roadlike", "tnolike"}
    road = generalisation["roadlike"]["methods"]
    assert set(road) == {"ours", "average", "maximum"}
    for method, result in road.items():
        assert result["count"] == 2
        assert all(np.isfinite(result["mean"][key]) for key in FUSION_KEYS), method
        assert "mIoU" not in result["mean"]  # no labels there
    # The fused outputs keep each pair's size and the visible image's colour.
    with Image.open(tmp_path / "fused-x" / "generalisation" / "roadlike" / "ours" / "p0.png") as fused:
        assert fused.size == (47, 33) and fused.mode == "RGB"
    assert generalisation["tnolike"]["methods"]["ours"]["count"] == 1
    assert not (tmp_path / "reports").exists() and not (tmp_path / "data" / "fused").exists()

    # Without generalisation sets, a stale file from an earlier run is removed.
    raw["evaluate"] = {"peers": {}}
    evaluate_step(params_from_dict(raw), paths)
    assert not (tmp_path / "rep" / "generalisation.json").exists()


def test_evaluate_step_names_a_missing_generalisation_folder(tmp_path: Path) -> None:
    raw = project_params()
    raw["evaluate"] = {"peers": {}, "generalisation": {"nowhere": "data/nowhere"}}
    params = params_from_dict(raw)
    paths = ProjectPaths.at(tmp_path, params.outputs)
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_models(paths.model_checkpoint)
    with pytest.raises(DataError, match=r"evaluate\.generalisation\.nowhere"):
        evaluate_step(params, paths)
    assert not paths.fused.exists()  # refused before any work
