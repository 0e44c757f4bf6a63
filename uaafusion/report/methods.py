"""The methods comparison (``uaafusion compare-methods``; ``reports/methods/``): fusion models trained
by their own presets on the same data and training budget (``params/methods/*.yaml``), each scored by its
pipeline's evaluate step, side by side with the pixel baselines and the peers' published outputs.

:func:`load_method_runs` reads the presets and checks that they compare like with like;
:func:`combined_evaluation` puts every method's per-image results under its name (the reference run's
baselines and peers included), so that :func:`uaafusion.metrics.comparison.compare_methods` draws paired
bootstrap intervals of the reference against every other method; :func:`method_facts` adds what the
metrics do not show (parameters, training time from the MLflow run, inference time from the benchmark
suite's ``methods`` section); :func:`degraded_comparison` runs the degraded benchmark
(:mod:`uaafusion.degraded_benchmark`) once with the reference and every other trained model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaafusion.config import OutputsConfig, Params, load_params
from uaafusion.errors import ConfigError, DataError
from uaafusion.method_names import OUR_METHOD
from uaafusion.paths import ProjectPaths, project_root_for
from uaafusion.integrity import write_text_atomically
from uaafusion.report.inputs import read_evaluation, relative

LOGGER = logging.getLogger(__name__)

COMPARED_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "box_mIoU")
"""The nine fusion metrics (MI in nats; MI_bits says the same) and the segmenter's box-mask mIoU."""
TARGET_METRICS: tuple[str, ...] = ("VIF", "Qabf")
"""What every trained head must beat the pixel average on."""
TARGET_BASELINE = "average"
BENCHMARK_CASES: dict[str, str] = {"inference_s": "fuse-640x480", "training_step_s": "fusion-step"}
"""Fact -> the name of its case in the benchmark suite's ``methods`` section (``methods/<method>/<case>``)."""
TRAINING_RUNS: tuple[str, ...] = ("pretrain", "round-")
"""Prefixes of the nested MLflow runs that train (not those ending in ``/validation``; evaluate and report
neither)."""


@dataclass(frozen=True)
class MethodRun:
    """One method preset: its fusion model's name, the params file and params, and its project paths."""

    name: str
    params_file: Path
    params: Params
    paths: ProjectPaths


def load_method_runs(params_files: Sequence[Path], root: Path | None = None) -> list[MethodRun]:
    """The presets, in the given order. ConfigError when two train the same fusion model or they differ in
    the data or training budget (then the comparison would not be fair); DataError naming the preset and
    the command when one has not been evaluated yet."""
    from uaafusion.training import training_params

    runs = []
    for params_file in params_files:
        params = load_params(params_file)
        paths = ProjectPaths.at(root if root is not None else project_root_for(params_file), params.outputs)
        run = MethodRun(params.model.fusion.name, Path(params_file), params, paths)
        if any(other.name == run.name for other in runs):
            raise ConfigError(f"{params_file}: trains {run.name!r} like "
                              f"{next(o.params_file for o in runs if o.name == run.name)}; give each method one preset.")
        if not paths.evaluation.is_file():
            raise DataError(f"{params_file}: no evaluation at {paths.evaluation}. Train and evaluate it first: "
                            f"uaafusion train --params {params_file} --steps prepare,train,evaluate,report")
        runs.append(run)
    if not runs:
        raise ConfigError("no method presets given: name at least two params files (params/methods/*.yaml).")
    budget = _budget(training_params(runs[0].params))
    for run in runs[1:]:
        differing = sorted(key for key, value in _budget(training_params(run.params)).items() if budget.get(key) != value)
        if differing:
            raise ConfigError(f"{run.params_file} and {runs[0].params_file} differ in {', '.join(differing)}: the "
                              "methods must train on the same data with the same budget; only model.fusion may differ.")
    return runs


def _budget(relevant: dict[str, Any]) -> dict[str, Any]:
    """The flat training params without the fusion model's own section (which may differ between methods)."""
    from uaafusion.config import flatten

    return {key: value for key, value in flatten(relevant).items() if not key.startswith("model.fusion.")}


def combined_evaluation(runs: Sequence[MethodRun]) -> dict[str, dict[str, Any]]:
    """``{method: result}``: each run's own model under its name, then the first run's pixel baselines and
    peers (scored with the first run's segmenter) under theirs."""
    results = {run.name: read_evaluation(run.paths.evaluation)[OUR_METHOD] for run in runs}
    for method, result in read_evaluation(runs[0].paths.evaluation).items():
        if method != OUR_METHOD and method not in results:
            results[method] = result
    return results


def parameter_count(checkpoint: Path) -> int | None:
    """Trainable parameters of the fusion network in ``checkpoint`` (``None`` without the file)."""
    if not checkpoint.is_file():
        return None
    from uaafusion.models.checkpoint import load_models

    return sum(parameter.numel() for parameter in load_models(checkpoint, map_location="cpu").fusion.parameters())


def training_minutes(paths: ProjectPaths) -> float | None:
    """Wall minutes from the start of the first training run to the end of the last one (nested runs of the
    pipeline's MLflow parent run, :data:`TRAINING_RUNS`); ``None`` when the run cannot be read."""
    try:
        pointer = json.loads(paths.mlflow_pointer.read_text())
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=pointer["tracking_uri"])
        children = client.search_runs([pointer["experiment_id"]],
                                      f"tags.mlflow.parentRunId = '{pointer['parent_run_id']}'")
    except Exception as error:  # noqa: BLE001 - a missing or unreachable run leaves the cell empty
        LOGGER.warning("no training time for %s: %s", paths.models, error)
        return None
    training = [child.info for child in children if child.info.run_name.startswith(TRAINING_RUNS)
                and not child.info.run_name.endswith("/validation") and child.info.end_time is not None]
    if not training:
        return None
    return (max(info.end_time for info in training) - min(info.start_time for info in training)) / 60_000


def benchmark_facts(benchmarks: Path) -> dict[str, dict[str, float]]:
    """``{method: {fact: median seconds}}`` from the benchmark suite's ``methods`` cases (empty without them)."""
    if not benchmarks.is_file():
        return {}
    facts: dict[str, dict[str, float]] = {}
    for key, case in json.loads(benchmarks.read_text()).get("cases", {}).items():
        section, _, rest = key.partition("/")
        method, _, case_name = rest.partition("/")
        if section != "methods":
            continue
        for fact, name in BENCHMARK_CASES.items():
            if case_name == name and isinstance(case.get("median_s"), (int, float)):
                facts.setdefault(method, {})[fact] = float(case["median_s"])
    return facts


def method_facts(runs: Sequence[MethodRun], benchmarks: Path) -> dict[str, dict[str, float | None]]:
    """Per trained method: ``parameters``, ``training_min`` and the :data:`BENCHMARK_CASES` facts."""
    timings = benchmark_facts(benchmarks)
    return {run.name: {"parameters": parameter_count(run.paths.model_checkpoint),
                       "training_min": training_minutes(run.paths),
                       **{fact: timings.get(run.name, {}).get(fact) for fact in BENCHMARK_CASES}}
            for run in runs}


def degraded_comparison(runs: Sequence[MethodRun], degraded_params: Path, out: ProjectPaths) -> dict[str, Any]:
    """The degraded benchmark with the first run's model as ours and every other run's model compared with
    it, on the sets that ``degraded_params``' ``evaluate.degraded`` section describes; fused images under
    ``out.fused``, ``degraded.json`` under ``out.reports`` with ours named after the first run."""
    from uaafusion.degraded_benchmark import degraded_benchmark_step

    reference = runs[0]
    settings = load_params(degraded_params).evaluate.degraded
    if not settings.kinds:
        raise ConfigError(f"{degraded_params}: evaluate.degraded.kinds is empty; name the degraded sets to compare on.")
    compare_with = {run.name: str(run.paths.model_checkpoint) for run in runs[1:]}
    params = dataclasses.replace(reference.params, evaluate=dataclasses.replace(
        reference.params.evaluate, degraded=dataclasses.replace(settings, compare_with=compare_with)))
    document = degraded_benchmark_step(params, out)
    renamed = rename_method(document, OUR_METHOD, reference.name)
    write_text_atomically(out.degraded, json.dumps(renamed, indent=1) + "\n")
    return renamed


def rename_method(document: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A ``degraded.json`` document with the method ``old`` called ``new`` (in the means and as the
    comparisons' reference)."""
    sets = {}
    for kind, entry in document["sets"].items():
        means = {new if method == old else method: values for method, values in entry["mean"].items()}
        comparison = dict(entry["comparison"])
        if comparison.get("reference") == old:
            comparison["reference"] = new
        sets[kind] = {**entry, "mean": means, "comparison": comparison}
    return {**document, "sets": sets}


def comparison_paths(reference: MethodRun, out: Path, fused: Path) -> ProjectPaths:
    """The project paths of the comparison: the reference run's models, the report folder ``out`` and the
    folder ``fused`` for the degraded sets' fused images."""
    return ProjectPaths.at(reference.paths.root, OutputsConfig(models=str(reference.paths.models), fused=str(fused),
                                                               reports=str(out)))


def run_label(run: MethodRun) -> str:
    """``alpha_blend (params/methods/alpha_blend.yaml)``."""
    return f"{run.name} ({relative(run.params_file.resolve(), run.paths.root)})"
