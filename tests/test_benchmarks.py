"""The benchmark suite (``python -m benchmarks`` / ``uaafusion bench``) in its quick mode: it runs,
writes the documented JSON, and the batched attribution gives the per-class loop's numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import attribution as attribution_bench
from benchmarks import pipeline as pipeline_bench
from benchmarks import suite, timing
from tests.helpers import REPO_ROOT

TIMING_KEYS = ("median_s", "min_s", "max_s", "stdev_s", "repeats", "runs_s")


def _check_timing(case: dict, repeats: int) -> None:
    for key in TIMING_KEYS:
        assert key in case, key
    assert case["repeats"] == repeats == len(case["runs_s"])
    assert 0 < case["min_s"] <= case["median_s"] <= case["max_s"]
    assert case["stdev_s"] >= 0 and all(math.isfinite(value) and value > 0 for value in case["runs_s"])


@pytest.fixture(scope="module")
def quick_document(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The whole quick suite (all sections but the pipeline), both attribution engines, 2 repeats."""
    root = tmp_path_factory.mktemp("bench-root")
    out = root / "out" / "bench.json"
    # One thread: quick cases are tiny, and two threads on a busy two-core machine spin in barriers.
    code = suite.main(["--quick", "--device", "cpu", "--engines", "forward,captum", "--repeats", "2", "--threads", "1",
                       "--root", str(root), "--params", str(REPO_ROOT / "params.yaml"), "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text()), root


def test_quick_suite_writes_machine_versions_and_every_section(quick_document: tuple[dict, Path]) -> None:
    document, _ = quick_document
    assert document["quick"] is True and document["device"] == "cpu"
    machine, versions = document["machine"], document["versions"]
    assert machine["cpu_model"] and machine["usable_cores"] >= 1 and machine["torch_threads"] >= 1
    for name in ("torch", "smp", "captum", "python"):
        assert versions[name], name
    assert set(document["sections"]) == {"attribution", "training", "inference", "metrics"}
    for name, case in document["cases"].items():
        _check_timing(case, 2)
    assert "pipeline/dvc-repro" not in document["cases"]  # no stored timing under this root


def test_quick_attribution_batched_equals_loop_and_reports_speedups(quick_document: tuple[dict, Path]) -> None:
    document, _ = quick_document
    section = document["sections"]["attribution"]
    assert section["grid"] == "quick" and section["engines"] == ["forward", "captum"]
    assert section["cases_run"] == [case.key for case in attribution_bench.quick_grid()]
    for key in section["cases_run"]:
        loop = document["cases"][f"attribution/{key}/per_class_loop"]
        for variant, engine in (("batched", "forward"), ("batched_captum", "captum")):
            record = document["cases"][f"attribution/{key}/{variant}"]
            assert record["engine"] == engine
            assert record["classes"] == loop["classes"] and record["copies"] == loop["copies"] > 0
            assert record["max_rel_diff_scores"] <= 1e-4
            assert record["max_abs_diff_weights"] <= 1e-4
            assert record["speedup"] == pytest.approx(loop["median_s"] / record["median_s"])
        assert document["ratios"][f"attribution/{key}"] > 0
        assert document["ratios"][f"attribution/{key}/captum"] > 0


def test_quick_training_inference_and_metrics_cases(quick_document: tuple[dict, Path]) -> None:
    document, _ = quick_document
    cases = document["cases"]
    cached, uncached = cases["training/fusion_step_cached"], cases["training/fusion_step_uncached"]
    uncached_captum = cases["training/fusion_step_uncached_captum"]  # the params' engine is "reverse"
    segmentation = cases["training/segmentation_step"]
    assert uncached["attribution_engine"] == "reverse" and uncached_captum["attribution_engine"] == "captum"
    assert cached["batch"] == 2 and cached["crop_size"] == 32 and cached["height"] == cached["width"] == 32
    assert cached["cache"]["misses"] == 2 and cached["cache"]["hits"] >= 3  # warm-up + 2 repeats, all hits
    for case in (cached, uncached, uncached_captum, segmentation):
        assert case["images_per_s"] == pytest.approx(case["batch"] / case["median_s"])
    assert document["ratios"]["training/cache_speedup"] == pytest.approx(uncached["median_s"] / cached["median_s"])
    assert document["ratios"]["training/cache_speedup_vs_captum"] == pytest.approx(
        uncached_captum["median_s"] / cached["median_s"])
    assert document["targets"]["training/cache_speedup"]["met"] == (document["ratios"]["training/cache_speedup"] >= 5)
    assert cached["labels"] == "scene"
    # The headline setting: the quick grid's first case (C 4, steps 2, batch 2, 48x32), every class present.
    headline = {step: cases[f"training/headline/{step}"]
                for step in ("fusion_step_cached", "fusion_step_uncached", "fusion_step_uncached_captum",
                             "segmentation_step")}
    for case in headline.values():
        _check_timing(case, 2)
        assert (case["batch"], case["width"], case["height"], case["num_classes"]) == (2, 48, 32, 4)
        assert case["classes_present"] == 4 and case["attribution_steps"] == 2 and case["labels"] == "stripes"
        assert case["fusion_stages"] == cached["fusion_stages"] and case["segmenter"] == cached["segmenter"]
    assert headline["fusion_step_cached"]["cache"]["misses"] == 2
    speedup = document["ratios"]["training/headline/cache_speedup"]
    assert speedup == pytest.approx(headline["fusion_step_uncached"]["median_s"]
                                    / headline["fusion_step_cached"]["median_s"])
    assert document["targets"]["training/headline/cache_speedup"]["met"] == (speedup >= 5)
    assert "training/headline" in document["sections"]["training"]["settings"]
    for width, height in ((64, 48), (96, 80)):
        case = cases[f"inference/{width}x{height}"]
        assert case["output_shape"] == [1, 1, height, width]
        assert case["ms_per_image"] == pytest.approx(1000 * case["median_s"])
        assert case["peak_memory_bytes"] > 0 and case["peak_memory_method"]
        assert 1 <= case["classes_present"] <= case["num_classes"]
    metrics = cases["metrics/3x64x48"]
    assert metrics["count"] == 3 and metrics["seconds_per_image"] > 0


def test_only_updates_its_section_and_reads_the_stored_pipeline_timing(quick_document: tuple[dict, Path],
                                                                      tmp_path: Path) -> None:
    document, _ = quick_document
    root = tmp_path
    out = root / "reports" / "benchmarks-quick.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(document))
    stored = {"median_s": 321.0, "min_s": 321.0, "max_s": 321.0, "stdev_s": 0.0, "repeats": 1, "runs_s": [321.0],
              "command": "dvc repro --force", "measured_at": "2026-01-01T00:00:00+00:00", "machine": {}}
    (root / "reports" / "pipeline-timing.json").write_text(json.dumps(stored))

    from uaafusion.cli import main as cli_main

    # `uaafusion bench` is the same suite; default output under --root with --quick.
    assert cli_main(["bench", "--quick", "--device", "cpu", "--only", "metrics", "--root", str(root),
                     "--params", str(REPO_ROOT / "params.yaml")]) == 0
    updated = json.loads(out.read_text())
    assert updated["cases"]["training/fusion_step_cached"] == document["cases"]["training/fusion_step_cached"]
    assert updated["sections"]["attribution"] == document["sections"]["attribution"]
    assert updated["cases"]["metrics/3x64x48"]["runs_s"] != document["cases"]["metrics/3x64x48"]["runs_s"]
    pipeline_case = updated["cases"]["pipeline/dvc-repro"]
    assert pipeline_case["median_s"] == 321.0 and pipeline_case["source"] == "reports/pipeline-timing.json"
    assert "machine" not in pipeline_case
    assert updated["sections"]["pipeline"]["ran"] is False


def test_set_overrides_a_param_and_is_recorded(tmp_path: Path) -> None:
    """``-S train.amp=true``: the training steps run under bfloat16 autocast (also on a CPU)."""
    out = tmp_path / "amp.json"
    assert suite.main(["--quick", "--device", "cpu", "--only", "training", "--threads", "1", "--root", str(tmp_path),
                       "--params", str(REPO_ROOT / "params.yaml"), "-S", "train.amp=true", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    cached = document["cases"]["training/fusion_step_cached"]
    assert cached["amp"] is True and document["cases"]["training/segmentation_step"]["amp"] is True
    assert document["sections"]["training"]["params"].endswith("params.yaml -S train.amp=true")
    assert suite.main(["--quick", "--only", "training", "--root", str(tmp_path), "-S", "train.amp"]) == 2


def test_bad_section_is_an_error_naming_the_allowed_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert suite.main(["--quick", "--only", "attribution,nonsense", "--root", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "nonsense" in message and "pipeline" in message


def test_default_output_names() -> None:
    assert suite.default_out(Path("r"), torch.device("cpu"), False) == Path("r/reports/benchmarks.json")
    assert suite.default_out(Path("r"), torch.device("cuda"), False) == Path("r/reports/benchmarks-cuda.json")
    assert suite.default_out(Path("r"), torch.device("cpu"), True) == Path("r/reports/benchmarks-quick.json")


def test_grids() -> None:
    full = attribution_bench.full_grid()
    assert len(full) == 24 and len({case.key for case in full}) == 24
    assert {(case.classes, case.steps) for case in full} == {(c, s) for c in (4, 9, 15) for s in (5, 10)}
    assert {(case.width, case.height) for case in full} == {(256, 256), (640, 480)}
    assert {case.batch for case in full} == {1, 8}
    reduced = attribution_bench.reduced_grid()
    assert reduced[0] == attribution_bench.HEADLINE_CASE == attribution_bench.AttributionCase(9, 5, 8, 256, 256)
    assert set(reduced) <= set(full)


def test_stripe_labels_put_every_class_in_every_image() -> None:
    labels = attribution_bench.stripe_labels(2, 9, 4, 256)
    assert labels.shape == (2, 4, 256) and labels.dtype == torch.int64
    for image in labels:
        assert torch.equal(image.unique(), torch.arange(9))
        assert (torch.bincount(image.flatten(), minlength=9) // 4).tolist() == [29, 28, 29, 28, 29, 28, 29, 28, 28]
    with pytest.raises(ValueError, match="width 3 < classes 4"):
        attribution_bench.stripe_labels(1, 4, 8, 3)


def test_headline_training_params_change_the_batch_not_the_models() -> None:
    from benchmarks.training import headline_params
    from uaafusion.config import load_params

    params = load_params(REPO_ROOT / "params.yaml")
    case = attribution_bench.HEADLINE_CASE
    changed = headline_params(params, case)
    assert (changed.data.num_classes, len(changed.data.class_names), changed.attribution.steps) == (9, 9, 5)
    assert (changed.data.batch_size, changed.data.crop_size) == (8, 0)
    assert (changed.synthetic.height, changed.synthetic.width) == (256, 256)
    assert changed.model == params.model and changed.train == params.train and changed.loss == params.loss
    assert changed.attribution.engine == params.attribution.engine
    assert changed.attribution.internal_batch_size == params.attribution.internal_batch_size


def test_mismatch_between_batched_and_loop_is_caught() -> None:
    reference = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    attribution_bench._check_same(reference + 1e-6, reference, 1e-4, "scores")
    with pytest.raises(AssertionError, match="differ"):
        attribution_bench._check_same(reference * 1.001, reference, 1e-4, "scores")


def test_timing_helpers() -> None:
    calls = []
    summary, result = timing.time_call(lambda: calls.append(1) or len(calls), "cpu", repeats=3, warmup=2)
    assert len(calls) == 5 and result == 5
    assert summary["repeats"] == 3 and summary["warmup"] == 2 and len(summary["runs_s"]) == 3
    assert timing.summarize([3.0, 1.0, 2.0])["median_s"] == 2.0
    assert timing.summarize([1.0])["stdev_s"] == 0.0
    with pytest.raises(ValueError):
        timing.summarize([])

    size = 64 * 2**20
    with timing.PeakMemory("cpu") as peak:
        block = torch.ones(size // 4)  # 64 MiB, touched
        del block
    assert peak.peak_bytes >= size * 0.9, peak.as_dict()
    info = timing.version_info()
    assert info["torch"] == torch.__version__.split("+")[0] or info["torch"]


def test_pipeline_copy_is_a_committed_repository_with_quick_params(tmp_path: Path) -> None:
    import yaml

    if subprocess.run(["git", "rev-parse"], cwd=REPO_ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    files = pipeline_bench.project_files(REPO_ROOT)
    assert "dvc.yaml" in files and "params.yaml" in files and not any(name.startswith(".venv/") for name in files)
    prepared = pipeline_bench.prepare_copy(REPO_ROOT, tmp_path, pipeline_bench.QUICK_OVERRIDES)
    assert prepared["files_copied"] == len(files)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["synthetic"]["train"] == 4 and params["attribution"]["steps"] == 2
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert status.stdout == ""
    environment = prepared["environment"]
    assert environment["PREFECT_HOME"].startswith(str(tmp_path))
    assert environment["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert not any(key.startswith(("MLFLOW_", "DVC_")) for key in environment)
    assert pipeline_bench.read_pipeline_timing(tmp_path / "nowhere") is None


def test_profile_only_writes_the_top_operators(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert suite.main(["--quick", "--device", "cpu", "--only", "none", "--profile", "--threads", "1",
                       "--root", str(tmp_path), "--params", str(REPO_ROOT / "params.yaml"), "--out", str(out)]) == 0
    text = (tmp_path / "reports" / "profile-cpu-quick.txt").read_text()
    assert "one fusion training step" in text and "one attribution call" in text
    assert "aten::" in text and "Self CPU" in text
    document = json.loads(out.read_text())
    assert document["cases"] == {} and document["files"]["profile"].endswith("profile-cpu-quick.txt")


def test_targets_judge_the_headline_attribution_ratio_per_device() -> None:
    from benchmarks.suite import targets

    key = "attribution/C9-s5-b8-256x256"
    assert targets({"device": "cpu", "ratios": {key: 1.495}})[key] == {"target": ">= 1.5x", "value": 1.495, "met": False}
    assert targets({"device": "cpu", "ratios": {key: 1.6}})[key]["met"] is True
    assert targets({"device": "cuda:0", "ratios": {key: 1.6}})[key] == {"target": ">= 5x", "value": 1.6, "met": False}
    assert key not in targets({"device": "cpu", "ratios": {}})


def test_targets_judge_the_cache_ratio_in_both_training_settings() -> None:
    from benchmarks.suite import targets

    found = targets({"device": "cpu", "ratios": {"training/cache_speedup": 3.0, "training/headline/cache_speedup": 7.0}})
    assert found["training/cache_speedup"]["met"] is False and found["training/headline/cache_speedup"]["met"] is True
    assert found["training/headline/cache_speedup"]["target"] == ">= 5x"
    assert "headline" in found["training/headline/cache_speedup"]["setting"]
    assert "training/headline/cache_speedup" not in targets({"device": "cpu", "ratios": {"training/cache_speedup": 3.0}})
