"""The degraded benchmark (``evaluate.degraded`` in ``params.yaml``, docs/degradations.md).

:func:`prepare_degraded_sets` degrades the test split once per kind (``uaafusion prepare
--degraded``, and the pipeline's prepare step when kinds are configured).
:func:`degraded_benchmark_step` fuses every set with our model, the pixel baselines (unless
``evaluate.degraded.baselines`` is false) and each
``compare_with`` model, scores the fused images against the **clean** sources (fusion metrics) and
the segmenter's box/label mIoU on them, and compares ours with every other method by paired
bootstrap. Each model is scored with its own segmenter (the system a user deploys); the baselines
with ours. ``<outputs.reports>/degraded.json`` (:attr:`~uaafusion.paths.ProjectPaths.degraded`) keeps the means and the comparisons; the full
per-image results stay beside the fused images (``<outputs.fused>/degraded/KIND/evaluation.json``).
A model's fused images of a set are reused by the next run when the checkpoint's bytes and the set's
manifest are the same (``<outputs.fused>/degraded/KIND/NAME.fused.json``): re-running the step after a
crash, or with another model added, does not fuse again what is already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uaafusion.config import Params
from uaafusion.method_names import BASELINE_METHODS, OUR_METHOD, PIPELINE_METHODS
from uaafusion.paths import ProjectPaths
from uaafusion.steps import fuse_dataset, with_absolute_data_root
from uaafusion.integrity import write_text_atomically

if TYPE_CHECKING:
    from uaafusion.data.datasets import LayoutFolders

LOGGER = logging.getLogger(__name__)


def degraded_root(params: Params, paths: ProjectPaths) -> Path:
    """Where the degraded test sets live: ``evaluate.degraded.root`` under the project root."""
    return paths.place(params.evaluate.degraded.root).resolve()


def benchmark_kinds(params: Params, kinds: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The kinds of the degraded benchmark: ``kinds`` if given, else ``evaluate.degraded.kinds``, else every kind."""
    from uaafusion.data.degrade import DEGRADATIONS

    return tuple(kinds or params.evaluate.degraded.kinds or DEGRADATIONS)


def prepare_degraded_sets(params: Params, paths: ProjectPaths, kinds: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Degrade the test split once per kind at ``evaluate.degraded.severity`` and ``seed`` ->
    ``<root>/KIND/`` (:func:`uaafusion.data.degraded_sets.build_degraded_benchmark`)."""
    from uaafusion.data.datasets import split_directory
    from uaafusion.data.degraded_sets import build_degraded_benchmark

    params = with_absolute_data_root(params, paths)
    config = params.evaluate.degraded
    split_dir = split_directory(params.data.layout, params.data.root, params.data.test_split)
    return build_degraded_benchmark(params.data.layout, split_dir, degraded_root(params, paths),
                                    benchmark_kinds(params, kinds), config.severity, config.seed, pairs=config.pairs)


def _checked_sets(params: Params, paths: ProjectPaths, clean: LayoutFolders) -> dict[str, Path]:
    """The prepared set of every configured kind, made from the ``clean`` test split with the configured
    severity, seed and pairs."""
    from uaafusion.data.degraded_sets import MANIFEST_NAME, spread_names
    from uaafusion.data.pairs import find_pairs
    from uaafusion.errors import DataError

    config = params.evaluate.degraded
    names = [pair.name for pair in find_pairs(clean.ir, clean.vi)]
    count = len(spread_names(names, config.pairs)) if config.pairs else len(names)
    sets: dict[str, Path] = {}
    for kind in config.kinds:
        folder = degraded_root(params, paths) / kind
        manifest_path = folder / MANIFEST_NAME
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if manifest is None or (manifest["kinds"], manifest["severity"], manifest["seed"], manifest["count"]) != (
                [kind], config.severity, config.seed, count):
            raise DataError(f"{folder}: no degraded test set for {kind} at severity {config.severity}, seed "
                            f"{config.seed} with {count} pairs. Run 'uaafusion prepare --degraded' (or the "
                            "pipeline's prepare step).")
        sets[kind] = folder
    return sets


def _compare_checkpoints(params: Params, paths: ProjectPaths) -> dict[str, Path]:
    """``evaluate.degraded.compare_with`` as name -> existing checkpoint; ConfigError for a missing file or
    a name the benchmark already uses for ours or a baseline (its results would be overwritten)."""
    from uaafusion.errors import ConfigError

    checkpoints = {}
    for name, value in params.evaluate.degraded.compare_with.items():
        if name in PIPELINE_METHODS:
            raise ConfigError(f"evaluate.degraded.compare_with.{name}: {name!r} names one of the methods the "
                              f"benchmark fuses anyway ({', '.join(PIPELINE_METHODS)}); give the model another name.")
        checkpoint = paths.place(value).resolve()
        if not checkpoint.is_file():
            raise ConfigError(f"evaluate.degraded.compare_with.{name} = {value}: checkpoint {checkpoint} not found; "
                              "train that model first or remove the entry.")
        checkpoints[name] = checkpoint
    return checkpoints


def _fused_or_reused(dataset: Any, params: Params, checkpoint: Path, checkpoint_sha256: str, set_folder: Path,
                     out_root: Path, name: str, baselines: bool) -> dict[str, Path]:
    """:func:`~uaafusion.steps.fuse_dataset` of one degraded set, unless an earlier run fused it with a
    checkpoint of the same bytes (and the same set, names and baselines): then its folders as they are."""
    from uaafusion.data.degraded_sets import MANIFEST_NAME

    record = {"checkpoint_sha256": checkpoint_sha256,
              "set": json.loads((set_folder / MANIFEST_NAME).read_text()), "names": sorted(dataset.names),
              "baselines": baselines}
    record_path = out_root / f"{name}.fused.json"
    methods = [name, *(BASELINE_METHODS if baselines else ())]
    folders = {method: out_root / method for method in methods}
    if record_path.is_file() and json.loads(record_path.read_text()) == record and all(
            (folder / f"{sample}.png").is_file() for folder in folders.values() for sample in record["names"]):
        LOGGER.info("reusing the fused images of %s in %s", name, out_root)
        return folders
    record_path.unlink(missing_ok=True)
    folders = fuse_dataset(dataset, params, checkpoint, out_root, f"fusing {set_folder.name} ({name})", name=name,
                           baselines=baselines)
    write_text_atomically(record_path, json.dumps(record, indent=1) + "\n")
    return folders


def degraded_benchmark_step(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    """Fuse, score and compare on every configured degraded set; writes and returns ``degraded.json``:
    ``{"severity", "seed", "root", "sets": {kind: {"mean": {method: {metric: value}}, "comparison":
    <Comparison JSON>}}}``."""
    from uaafusion.data.datasets import create_dataset, layout_folders, split_directory
    from uaafusion.device import resolve_device
    from uaafusion.metrics.comparison import compare_methods
    from uaafusion.metrics.evaluate import evaluate_folders
    from uaafusion.models.checkpoint import load_models

    params = with_absolute_data_root(params, paths)
    config = params.evaluate.degraded
    clean = layout_folders(params.data.layout,
                           split_directory(params.data.layout, params.data.root, params.data.test_split))
    sets = _checked_sets(params, paths, clean)
    checkpoints = {OUR_METHOD: paths.model_checkpoint, **_compare_checkpoints(params, paths)}
    device = resolve_device(params.device)
    digests = {name: hashlib.sha256(checkpoint.read_bytes()).hexdigest() for name, checkpoint in checkpoints.items()}
    segmenters = {name: load_models(checkpoint, map_location=device).segmenter.to(device).eval()
                  for name, checkpoint in checkpoints.items()}
    document: dict[str, Any] = {"severity": config.severity, "seed": config.seed,
                                "root": str(degraded_root(params, paths)), "sets": {}}
    for kind, folder in sets.items():
        data = dataclasses.replace(params.data, root=str(folder))
        dataset = create_dataset(data, None, crop=False, seed=params.seed)
        inputs = layout_folders(params.data.layout, folder)
        out_root = paths.fused / "degraded" / kind
        results: dict[str, dict[str, Any]] = {}
        for name, checkpoint in checkpoints.items():
            fused = _fused_or_reused(dataset, params, checkpoint, digests[name], folder, out_root, name,
                                     baselines=name == OUR_METHOD and config.baselines)
            for method, fused_dir in fused.items():
                LOGGER.info("scoring %s on %s", method, kind)
                results[method] = evaluate_folders(
                    inputs.ir, inputs.vi, fused_dir, labels_dir=inputs.label, boxes_dir=inputs.boxes,
                    segmenter=segmenters[name], num_classes=params.data.num_classes,
                    class_names=list(params.data.class_names), ignore_index=params.data.ignore_index,
                    device=str(device), progress=False, reference_ir_dir=clean.ir, reference_vi_dir=clean.vi)
        write_text_atomically(out_root / "evaluation.json", json.dumps(results, indent=1))
        comparison = compare_methods(results, OUR_METHOD, skip_unpaired=True)
        document["sets"][kind] = {"mean": {method: result["mean"] for method, result in results.items()},
                                  "comparison": comparison.to_json()}
    paths.reports.mkdir(parents=True, exist_ok=True)
    write_text_atomically(paths.degraded, json.dumps(document, indent=1) + "\n")
    return document


TRACKED_METRICS: tuple[str, ...] = ("VIF", "Qabf", "SSIM", "box_mIoU", "mIoU")
"""The metrics of each degraded set sent to the experiment tracker (the full tables are in the report)."""


def tracked_metrics(document: dict[str, Any]) -> dict[str, float]:
    """``degraded/<kind>/<metric>`` of ours and ``degraded/<kind>/ours-<other>/<metric>`` (the paired
    difference) for :data:`TRACKED_METRICS`, from a ``degraded.json`` document."""
    flat: dict[str, float] = {}
    for kind, entry in document["sets"].items():
        for metric in TRACKED_METRICS:
            value = entry["mean"].get(OUR_METHOD, {}).get(metric)
            if value is not None:
                flat[f"degraded/{kind}/{metric}"] = float(value)
            for other, differences in entry["comparison"]["against"].items():
                estimate = differences.get(metric, {}).get("estimate")
                if estimate is not None:
                    flat[f"degraded/{kind}/{OUR_METHOD}-{other}/{metric}"] = float(estimate)
    return flat
