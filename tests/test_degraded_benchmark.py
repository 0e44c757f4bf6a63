"""The degraded benchmark: prepared sets fused by ours, the baselines and a compare_with model, scored
against the clean sources, compared, and summarised in ``degraded.json``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.report.fake_project import SAMPLE_NAMES, project_params, write_models, write_tiny_dataset
from uaafusion.config import params_from_dict
from uaafusion.degraded_benchmark import degraded_benchmark_step, prepare_degraded_sets, tracked_metrics
from uaafusion.errors import ConfigError, DataError
from uaafusion.paths import ProjectPaths

KINDS = ["noise", "ir_stripes"]


def make_project(tmp_path: Path, compare_with: dict[str, str] | None = None, **degraded: object) -> tuple:
    raw = project_params(outputs={"models": "m", "fused": "fused-x", "reports": "rep"})
    raw["evaluate"] = {"peers": {}, "degraded": {"kinds": KINDS, "severity": 0.5, "seed": 0,
                                                 "root": str(tmp_path / "degraded"),
                                                 "compare_with": compare_with or {}, **degraded}}
    params = params_from_dict(raw)
    return params, ProjectPaths.at(tmp_path, params.outputs)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ProjectPaths, dict]:
    """A tiny msrs project with a model and a copy of it as ``same-model``, its sets prepared and benchmarked."""
    tmp_path = tmp_path_factory.mktemp("project")
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path, {"same-model": "other/copy.pt"})
    write_models(paths.model_checkpoint)
    (tmp_path / "other").mkdir()
    shutil.copyfile(paths.model_checkpoint, tmp_path / "other" / "copy.pt")
    prepare_degraded_sets(params, paths)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny images: one thread is fastest, and immune to a busy machine
    try:
        return tmp_path, paths, degraded_benchmark_step(params, paths)
    finally:
        torch.set_num_threads(threads)


def test_report_holds_means_and_comparisons_per_set(benchmark) -> None:
    tmp_path, paths, document = benchmark
    assert json.loads((paths.reports / "degraded.json").read_text()) == document
    assert (document["severity"], document["seed"]) == (0.5, 0)
    assert list(document["sets"]) == KINDS
    for kind in KINDS:
        entry = document["sets"][kind]
        assert set(entry["mean"]) == {"ours", "average", "maximum", "same-model"}
        for method, mean in entry["mean"].items():
            assert {"VIF", "SSIM", "mIoU", "mIoU_ir"} <= set(mean), method
        against = entry["comparison"]["against"]
        assert entry["comparison"]["reference"] == "ours"
        assert set(against) == {"average", "maximum", "same-model"}
        assert against["same-model"]["VIF"]["estimate"] == 0  # the same weights fuse the same images
        assert against["same-model"]["mIoU"]["estimate"] == 0
        assert against["average"]["VIF"]["estimate"] != 0
        assert entry["mean"]["ours"] == entry["mean"]["same-model"]
        # Per image results and fused images lie beside each other under <outputs.fused>/degraded/KIND.
        out = tmp_path / "fused-x" / "degraded" / kind
        evaluation = json.loads((out / "evaluation.json").read_text())
        assert set(evaluation) == set(entry["mean"])
        for method in entry["mean"]:
            assert sorted(evaluation[method]["per_image"]) == SAMPLE_NAMES
            assert sorted(path.stem for path in (out / method).iterdir()) == SAMPLE_NAMES
    # The two kinds degrade different sources, so they give different scores.
    assert document["sets"]["noise"]["mean"]["ours"]["VIF"] != document["sets"]["ir_stripes"]["mean"]["ours"]["VIF"]


def test_fusion_metrics_compare_with_the_clean_sources(benchmark) -> None:
    """Scored against the clean test split: the ir_stripes set's 'maximum' scored like the CLI would."""
    from uaafusion.metrics.evaluate import evaluate_folders

    tmp_path, _, document = benchmark
    clean, fused = tmp_path / "data" / "tiny" / "test", tmp_path / "fused-x" / "degraded" / "ir_stripes" / "maximum"
    expected = evaluate_folders(clean / "ir", clean / "vi", fused, progress=False)
    mean = document["sets"]["ir_stripes"]["mean"]["maximum"]
    for metric in ("MI", "VIF", "Qabf", "SSIM"):
        assert mean[metric] == pytest.approx(expected["mean"][metric], abs=1e-12), metric


def test_tracked_metrics_name_kind_and_method(benchmark) -> None:
    _, _, document = benchmark
    flat = tracked_metrics(document)
    for kind in KINDS:
        assert flat[f"degraded/{kind}/VIF"] == document["sets"][kind]["mean"]["ours"]["VIF"]
        assert flat[f"degraded/{kind}/mIoU"] == document["sets"][kind]["mean"]["ours"]["mIoU"]
        assert flat[f"degraded/{kind}/ours-same-model/VIF"] == 0
        assert f"degraded/{kind}/ours-average/SSIM" in flat
    assert all(isinstance(value, float) for value in flat.values())


def test_step_before_preparing_asks_for_prepare(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path)
    with pytest.raises(DataError, match="uaafusion prepare --degraded"):
        degraded_benchmark_step(params, paths)
    # Sets made at another severity do not count either.
    prepare_degraded_sets(params_from_dict({**project_params(), "evaluate": {"degraded": {
        "kinds": KINDS, "severity": 0.2, "root": str(tmp_path / "degraded")}}}), paths)
    with pytest.raises(DataError, match="severity 0.5"):
        degraded_benchmark_step(params, paths)
    assert not paths.fused.exists() and not paths.reports.exists()


def test_missing_compare_with_checkpoint_is_refused_before_fusing(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path, {"clean-trained": "models/nowhere.pt"})
    prepare_degraded_sets(params, paths)
    with pytest.raises(ConfigError, match=r"evaluate\.degraded\.compare_with\.clean-trained") as caught:
        degraded_benchmark_step(params, paths)
    assert "nowhere.pt" in str(caught.value)
    assert not paths.fused.exists()


@pytest.mark.parametrize("name", ["ours", "average"])
def test_compare_with_may_not_take_a_pipeline_method_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"evaluate\.degraded\.compare_with.*'{name}'"):
        make_project(tmp_path, {name: "models/model.pt"})


def test_step_refuses_a_compare_with_named_like_a_baseline(tmp_path: Path) -> None:
    """Params built in code skip the config check; the step still refuses to overwrite a baseline's results."""
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path)
    prepare_degraded_sets(params, paths)
    write_models(paths.model_checkpoint)
    degraded = dataclasses.replace(params.evaluate.degraded, compare_with={"maximum": str(paths.model_checkpoint)})
    params = dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, degraded=degraded))
    with pytest.raises(ConfigError, match=r"evaluate\.degraded\.compare_with\.maximum"):
        degraded_benchmark_step(params, paths)
    assert not paths.fused.exists()


def test_a_rerun_reuses_fused_images_until_the_checkpoint_changes(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path, {"other": "other/model.pt"}, kinds=["noise"])
    write_models(paths.model_checkpoint)
    (tmp_path / "other").mkdir()
    shutil.copyfile(paths.model_checkpoint, tmp_path / "other" / "model.pt")
    prepare_degraded_sets(params, paths)
    first = degraded_benchmark_step(params, paths)
    fused = paths.fused / "degraded" / "noise"
    stamps = {path: path.stat().st_mtime_ns for path in fused.rglob("*.png")}
    assert degraded_benchmark_step(params, paths) == first  # same numbers, nothing fused again
    assert {path: path.stat().st_mtime_ns for path in fused.rglob("*.png")} == stamps
    # Another model under the same name: its images are fused again, ours are reused.
    from uaafusion.integrity import tensors_sha256
    from uaafusion.models.checkpoint import DIGESTED_KEYS

    model = torch.load(tmp_path / "other" / "model.pt", weights_only=False)
    for tensor in model["fusion_state"].values():
        if tensor.is_floating_point():
            tensor.add_(0.01)
    model["digest"] = tensors_sha256(*(model[key] for key in DIGESTED_KEYS))  # a genuinely other model
    torch.save(model, tmp_path / "other" / "model.pt")
    degraded_benchmark_step(params, paths)
    changed = {path.parent.name for path, stamp in stamps.items() if path.stat().st_mtime_ns != stamp}
    assert changed == {"other"}


def test_baselines_can_be_left_out(tmp_path: Path) -> None:
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path, kinds=["ir_stripes"], baselines=False)
    write_models(paths.model_checkpoint)
    prepare_degraded_sets(params, paths)
    document = degraded_benchmark_step(params, paths)
    assert set(document["sets"]["ir_stripes"]["mean"]) == {"ours"}
    assert not (paths.fused / "degraded" / "ir_stripes" / "average").exists()


def test_a_subset_of_pairs_spread_over_the_split(tmp_path: Path) -> None:
    from uaafusion.data.degraded_sets import spread_names

    assert spread_names(["d", "a", "c", "b", "e", "f"], 3) == ["a", "c", "e"]
    assert spread_names(["b", "a"], 5) == ["a", "b"]
    write_tiny_dataset(tmp_path / "data" / "tiny")
    params, paths = make_project(tmp_path, kinds=["noise"], pairs=2, baselines=False)
    write_models(paths.model_checkpoint)
    prepare_degraded_sets(params, paths)
    folder = tmp_path / "degraded" / "noise"
    for name in ("ir", "vi", "Label"):
        assert sorted(path.stem for path in (folder / name).iterdir()) == SAMPLE_NAMES[:2]
    document = degraded_benchmark_step(params, paths)
    assert json.loads((paths.fused / "degraded" / "noise" / "evaluation.json").read_text())["ours"]["count"] == 2
    assert document["sets"]["noise"]["comparison"]["reference"] == "ours"
    # Sets prepared for another number of pairs are not taken for these.
    _, other_paths = make_project(tmp_path, kinds=["noise"], pairs=3)
    with pytest.raises(DataError, match="with 3 pairs"):
        degraded_benchmark_step(make_project(tmp_path, kinds=["noise"], pairs=3)[0], other_paths)
