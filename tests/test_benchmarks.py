"""The benchmark suite (``python -m benchmarks``) in its quick mode: it runs, writes the documented
JSON, and the batched attribution gives the per-class loop's numbers."""

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
from uaafusion.data.degrade import DEGRADATIONS

PARAMS = ["--params", str(REPO_ROOT / "params.yaml")]


def _check_timing(case: dict, repeats: int) -> None:
    assert case["repeats"] == repeats == len(case["runs_s"])
    assert 0 < case["min_s"] <= case["median_s"] <= case["max_s"] and case["stdev_s"] >= 0
    assert all(math.isfinite(value) and value > 0 for value in case["runs_s"])


@pytest.fixture(scope="module")
def quick_document(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The whole quick suite (all sections but the pipeline), two attribution engines, 2 repeats."""
    root = tmp_path_factory.mktemp("bench-root")
    out = root / "out" / "bench.json"
    # One thread: quick cases are tiny, and two threads on a busy two-core machine spin in barriers.
    assert suite.main(["--quick", "--device", "cpu", "--engines", "forward,captum", "--repeats", "2", "--threads", "1",
                       "--root", str(root), *PARAMS, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_suite_writes_machine_versions_and_every_section(quick_document: dict) -> None:
    assert quick_document["quick"] is True and quick_document["device"] == "cpu"
    machine, versions = quick_document["machine"], quick_document["versions"]
    assert machine["cpu_model"] and machine["usable_cores"] >= 1 and machine["torch_threads"] >= 1
    assert all(versions[name] for name in ("torch", "smp", "captum", "python"))
    assert set(quick_document["sections"]) == {"attribution", "training", "inference", "metrics", "degrade"}
    for case in quick_document["cases"].values():
        _check_timing(case, 2)
    assert "pipeline/dvc-repro" not in quick_document["cases"]  # no stored timing under this root


def test_quick_attribution_batched_equals_loop_and_reports_speedups(quick_document: dict) -> None:
    cases, section = quick_document["cases"], quick_document["sections"]["attribution"]
    assert section["grid"] == "quick" and section["engines"] == ["forward", "captum"]
    assert section["cases_run"] == [case.key for case in attribution_bench.quick_grid()]
    for key in section["cases_run"]:
        loop = cases[f"attribution/{key}/per_class_loop"]
        for variant, engine, ratio in (("batched", "forward", key), ("batched_captum", "captum", f"{key}/captum")):
            record = cases[f"attribution/{key}/{variant}"]
            assert record["engine"] == engine and record["copies"] == loop["copies"] > 0
            assert record["max_rel_diff_scores"] <= 1e-4 and record["max_abs_diff_weights"] <= 1e-4
            assert record["speedup"] == quick_document["ratios"][f"attribution/{ratio}"] == pytest.approx(
                loop["median_s"] / record["median_s"])


def test_quick_training_inference_and_metrics_cases(quick_document: dict) -> None:
    cases, ratios, targets = quick_document["cases"], quick_document["ratios"], quick_document["targets"]
    for prefix, size, labels in (("training", (2, 32, 32, 2), "scene"),
                                 ("training/headline", (2, 48, 32, 2), "stripes")):
        steps = {step: cases[f"{prefix}/{step}"] for step in ("fusion_step_cached", "fusion_step_uncached",
                                                                "fusion_step_uncached_captum", "segmentation_step")}
        cached = steps["fusion_step_cached"]
        assert steps["fusion_step_uncached"]["attribution_engine"] == "reverse"  # the params' engine
        assert steps["fusion_step_uncached_captum"]["attribution_engine"] == "captum"
        assert cached["cache"]["misses"] == 2 and cached["cache"]["hits"] >= 3  # warm-up + 2 repeats, all hits
        for case in steps.values():
            assert (case["batch"], case["width"], case["height"], case["attribution_steps"]) == size
            assert case["labels"] == labels and case["images_per_s"] == pytest.approx(case["batch"] / case["median_s"])
        for name, slow in (("cache_speedup", "fusion_step_uncached"), ("cache_speedup_vs_captum",
                                                                        "fusion_step_uncached_captum")):
            assert ratios[f"{prefix}/{name}"] == pytest.approx(steps[slow]["median_s"] / cached["median_s"])
        assert targets[f"{prefix}/cache_speedup"]["met"] == (ratios[f"{prefix}/cache_speedup"] >= 5)
    headline = cases["training/headline/fusion_step_cached"]
    assert headline["classes_present"] == headline["num_classes"] == 4  # stripes: every class in every image
    for width, height in ((64, 48), (96, 80)):
        for mode in ("exact", "fast"):
            case = cases[f"inference/{mode}/{width}x{height}"]
            assert case["mode"] == mode and case["output_shape"][:2] == [height, width]
            assert case["ms_per_image"] == pytest.approx(1000 * case["median_s"]) and case["first_call_s"] > 0
            assert case["peak_rss_gib"] > 0.1 and 1 <= case["classes_present"] <= case["num_classes"]
    profile = {key.rsplit("/", 1)[1]: case for key, case in cases.items() if key.startswith("inference/profile/")}
    assert {"class_mask", "attribution_weights", "segmenter_gradient_one_stage", "proximal_networks_all_stages",
            "whole_pair_exact", "whole_pair_fast"} <= set(profile)
    assert profile["whole_pair_exact"]["share_of_exact_pair"] == 1.0
    assert profile["segmenter_gradient_one_stage"]["calls_per_pair"] == {"exact": 2, "fast": 1}
    assert not any(key.startswith("inference/fuse_folder") for key in cases)  # not with --quick
    assert cases["metrics/3x64x48"]["count"] == 3 and cases["metrics/3x64x48"]["seconds_per_image"] > 0
    degrade = cases["degrade/3-pairs-all-kinds"]
    assert degrade["pairs"] == 3 and degrade["kinds"] == list(DEGRADATIONS) and degrade["source"].startswith("synthetic")


def test_only_updates_its_section_and_reads_the_stored_pipeline_timing(quick_document: dict, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "benchmarks-quick.json"  # the default output under --root with --quick
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(quick_document))
    stored = {**timing.summarize([321.0]), "command": "dvc repro --force", "measured_at": "2026-01-01", "machine": {}}
    (tmp_path / "reports" / "pipeline-timing.json").write_text(json.dumps(stored))
    assert suite.main(["--quick", "--device", "cpu", "--only", "metrics", "--root", str(tmp_path), *PARAMS]) == 0
    updated = json.loads(out.read_text())
    for part, key in (("cases", "training/fusion_step_cached"), ("sections", "attribution"),
                      ("ratios", "attribution/C4-s2-b2-48x32")):
        assert updated[part][key] == quick_document[part][key]
    assert updated["cases"]["metrics/3x64x48"]["runs_s"] != quick_document["cases"]["metrics/3x64x48"]["runs_s"]
    pipeline_case = updated["cases"]["pipeline/dvc-repro"]
    assert pipeline_case["median_s"] == 321.0 and pipeline_case["source"] == "reports/pipeline-timing.json"
    assert "machine" not in pipeline_case and updated["sections"]["pipeline"]["ran"] is False


def test_set_overrides_a_param_and_is_recorded(tmp_path: Path) -> None:
    """``-S train.amp=true``: the training steps run under bfloat16 autocast (also on a CPU)."""
    out = tmp_path / "amp.json"
    assert suite.main(["--quick", "--device", "cpu", "--only", "training", "--threads", "1", "--root", str(tmp_path),
                       *PARAMS, "-S", "train.amp=true", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["cases"]["training/fusion_step_cached"]["amp"] is True
    assert document["cases"]["training/segmentation_step"]["amp"] is True
    assert document["sections"]["training"]["params"].endswith("params.yaml -S train.amp=true")
    assert suite.main(["--quick", "--only", "training", "--root", str(tmp_path), "-S", "train.amp"]) == 2


def test_bad_names_are_errors_naming_the_allowed_ones(capsys: pytest.CaptureFixture) -> None:
    for option, value, allowed in (("--only", "attribution,nonsense", "pipeline"),
                                   ("--engines", "nonsense", "forward")):
        with pytest.raises(SystemExit) as exit_info:
            suite.main(["--quick", option, value])
        message = capsys.readouterr().err
        assert exit_info.value.code == 2 and "nonsense" in message and allowed in message


def test_default_output_names() -> None:
    assert suite.default_out(Path("r"), torch.device("cpu"), False) == Path("r/reports/benchmarks.json")
    assert suite.default_out(Path("r"), torch.device("cuda"), False) == Path("r/reports/benchmarks-cuda.json")
    assert suite.default_out(Path("r"), torch.device("cpu"), True) == Path("r/reports/benchmarks-quick.json")


def test_grids_and_stripe_labels() -> None:
    full = attribution_bench.full_grid()
    assert len({case.key for case in full}) == 24
    assert {(case.classes, case.steps, case.batch, case.width, case.height) for case in full} == {
        (c, s, b, w, h) for c in (4, 9, 15) for s in (5, 10) for b in (1, 8) for w, h in ((256, 256), (640, 480))}
    reduced = attribution_bench.reduced_grid()
    assert reduced[0] == attribution_bench.HEADLINE_CASE == attribution_bench.AttributionCase(9, 5, 8, 256, 256)
    assert set(reduced) <= set(full)
    labels = attribution_bench.stripe_labels(2, 9, 4, 256)
    assert labels.shape == (2, 4, 256) and labels.dtype == torch.int64
    for image in labels:
        assert (torch.bincount(image.flatten(), minlength=9) // 4).tolist() == [29, 28, 29, 28, 29, 28, 29, 28, 28]
    with pytest.raises(ValueError, match="width 3 < classes 4"):
        attribution_bench.stripe_labels(1, 4, 8, 3)


def test_headline_training_params_change_the_batch_not_the_models() -> None:
    from benchmarks.training import headline_params
    from uaafusion.config import load_params

    params = load_params(REPO_ROOT / "params.yaml")
    changed = headline_params(params, attribution_bench.HEADLINE_CASE)
    assert (changed.data.num_classes, len(changed.data.class_names), changed.attribution.steps) == (9, 9, 5)
    assert (changed.data.batch_size, changed.data.crop_size, changed.synthetic.height, changed.synthetic.width) == (
        8, 0, 256, 256)
    assert (changed.model, changed.train, changed.loss) == (params.model, params.train, params.loss)
    assert changed.attribution.engine == params.attribution.engine
    assert changed.attribution.internal_batch_size == params.attribution.internal_batch_size


def test_mismatch_between_batched_and_loop_is_caught() -> None:
    reference = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    attribution_bench.check_same(reference + 1e-6, reference, 1e-4, "scores")
    with pytest.raises(AssertionError, match="differ"):
        attribution_bench.check_same(reference * 1.001, reference, 1e-4, "scores")


def test_timing_helpers() -> None:
    calls = []
    summary, result = timing.time_call(lambda: calls.append(1) or len(calls), "cpu", repeats=3, warmup=2)
    assert result == 5 and (summary["repeats"], summary["warmup"], len(summary["runs_s"])) == (3, 2, 3)
    assert timing.summarize([3.0, 1.0, 2.0])["median_s"] == 2.0 and timing.summarize([1.0])["stdev_s"] == 0.0
    with pytest.raises(ValueError):
        timing.summarize([])
    size = 64 * 2**20
    with timing.PeakMemory("cpu") as peak:
        torch.ones(size // 4)  # 64 MiB, touched, freed
    assert peak.peak_bytes >= size * 0.9, peak.as_dict()


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
                       "--root", str(tmp_path), *PARAMS, "--out", str(out)]) == 0
    text = (tmp_path / "reports" / "profile-cpu-quick.txt").read_text()
    assert "one fusion training step" in text and "one attribution call" in text and "aten::" in text
    document = json.loads(out.read_text())
    assert document["cases"] == {} and document["files"]["profile"].endswith("profile-cpu-quick.txt")


def test_targets_judge_the_attribution_ratio_per_device_and_the_cache_in_both_settings() -> None:
    key = "attribution/C9-s5-b8-256x256"
    assert suite.targets({"device": "cpu", "ratios": {key: 1.495}})[key] == {"target": ">= 1.5x", "value": 1.495,
                                                                            "met": False}
    assert suite.targets({"device": "cpu", "ratios": {key: 1.6}})[key]["met"] is True
    assert suite.targets({"device": "cuda:0", "ratios": {key: 1.6}})[key] == {"target": ">= 5x", "value": 1.6,
                                                                             "met": False}
    found = suite.targets({"device": "cpu", "ratios": {"training/cache_speedup": 3.0}})
    assert found["training/cache_speedup"]["met"] is False and set(found) == {"training/cache_speedup"}
    found = suite.targets({"device": "cpu", "ratios": {"training/headline/cache_speedup": 7.0}})
    assert found["training/headline/cache_speedup"]["met"] is True
    assert "headline" in found["training/headline/cache_speedup"]["setting"]
    found = suite.targets({"device": "cpu", "cases": {"metrics/60x640x480": {"median_s": 61.0}}})
    assert found["metrics/60x640x480"] == {"target": "< 60 s", "value": 61.0, "met": False}
    found = suite.targets({"device": "cpu", "cases": {"degrade/60-pairs-all-kinds": {"median_s": 14.0}}})
    assert found["degrade/60-pairs-all-kinds"] == {"target": "< 60 s", "value": 14.0, "met": True}


@pytest.mark.slow  # four torchrun launches: about a minute
def test_quick_distributed_section_times_one_and_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert suite.main(["--quick", "--device", "cpu", "--only", "distributed", "--processes", "2", "--repeats", "1",
                       "--root", str(tmp_path), *PARAMS, "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    one, two = document["cases"]["distributed/1x2-threads"], document["cases"]["distributed/2x1-threads"]
    for case, processes in ((one, 1), (two, 2)):
        _check_timing(case, 1)
        assert case["processes"] == processes and case["steps"] > 0 and case["samples"] > 0
        assert case["samples_per_s"] == pytest.approx(case["samples"] / case["median_s"])
    assert one["steps"] == two["steps"]  # the same global batches in one and in two processes
    assert document["ratios"]["distributed/2_processes_vs_1"] == pytest.approx(two["samples_per_s"] / one["samples_per_s"])


def test_quick_methods_section_times_every_method_preset(tmp_path: Path) -> None:
    from benchmarks.methods import method_presets

    out = tmp_path / "bench.json"
    assert suite.main(["--quick", "--device", "cpu", "--only", "methods", "--repeats", "2", "--threads", "1",
                       "--root", str(REPO_ROOT), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    names = [path.stem for path in method_presets(REPO_ROOT)]
    assert {"alpha_blend", "mask_guided", "prompt", "uaafusion"} <= set(names)
    timed = {key for key in document["cases"] if key.startswith("methods/")}
    assert timed == {f"methods/{name}/{case}" for name in names for case in ("fusion-step", "fuse-64x48")}
    for name in names:
        step, fuse = document["cases"][f"methods/{name}/fusion-step"], document["cases"][f"methods/{name}/fuse-64x48"]
        _check_timing(step, 2)
        _check_timing(fuse, 2)
        assert step["batch"] == 2 and step["preset"].endswith(f"{name}.yaml")  # the preset's params, shrunk by --quick
        assert fuse["output_shape"][:2] == [48, 64]
        assert fuse["models"].startswith("params defaults (untrained")  # --quick never loads the trained models
    assert document["sections"]["methods"]["presets"] == [str(path) for path in method_presets(REPO_ROOT)]
