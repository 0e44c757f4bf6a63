"""The pipeline's steps as plain functions: params + project paths in, files out.

``flows/pipeline.py`` (Prefect) and ``dvc.yaml`` call these; nothing here knows about either.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from uaafusion.config import Params
from uaafusion.method_names import BASELINE_METHODS, BASELINES, OUR_METHOD
from uaafusion.paths import ProjectPaths
from uaafusion.integrity import write_text_atomically

LOGGER = logging.getLogger(__name__)



def uses_synthetic_data(params: Params, paths: ProjectPaths) -> bool:
    """True when ``data.root`` is the project's embedded synthetic dataset."""
    return resolve_data_root(params, paths) == paths.synthetic_data


def resolve_data_root(params: Params, paths: ProjectPaths) -> Path:
    """``data.root`` as an absolute path (relative roots are relative to the project root)."""
    return paths.place(params.data.root).resolve()


def with_absolute_data_root(params: Params, paths: ProjectPaths) -> Params:
    """Params whose ``data.root`` no longer depends on the current directory."""
    import dataclasses

    data = dataclasses.replace(params.data, root=str(resolve_data_root(params, paths)))
    return dataclasses.replace(params, data=data)


def prepare_step(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    """Write the embedded synthetic dataset when ``data.root`` is its folder, else check the configured
    dataset (:func:`check_dataset`). Returns the synthetic set's manifest or the check's summary."""
    from uaafusion.data.synthetic import write_synthetic_dataset

    if uses_synthetic_data(params, paths):
        return write_synthetic_dataset(params.synthetic, paths.synthetic_data)
    return check_dataset(with_absolute_data_root(params, paths))


def check_dataset(params: Params) -> dict[str, Any]:
    """Read every pair of the configured dataset's splits (a split sharing another's folder is read once).

    Returns ``{"root", "splits": {split: {"folder", "count", "sizes": [[H, W], ...], "skipped": [[name,
    reason], ...]}}}``; raises :class:`DataError` at a bad file (``on_bad_input: strict``) or when no
    split has a usable pair.
    """
    from uaafusion.data.datasets import create_dataset, split_directory
    from uaafusion.errors import DataError

    data = params.data
    splits: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys((data.train_split, data.test_split)):
        folder = split_directory(data.layout, data.root, split).resolve()
        same = next((name for name, info in splits.items() if info["folder"] == str(folder)), None)
        if same is not None:
            splits[split] = {**splits[same], "same_as": same}
            continue
        dataset = create_dataset(data, split, crop=False, seed=params.seed)
        splits[split] = {"folder": str(folder), "count": len(dataset),
                         "sizes": sorted({(record.height, record.width) for record in dataset.records}),
                         "skipped": [list(item) for item in dataset.skipped]}
    if not any(info["count"] for info in splits.values()):
        raise DataError(f"{data.root}: no usable pairs found.")
    return {"root": data.root, "splits": splits}


def write_training_curves(history: dict[str, list[dict[str, Any]]], out_dir: Path) -> dict[str, Path]:
    """``steps.csv`` (loss per optimisation step) and ``rounds.csv`` (validation per round)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    steps_path = out_dir / "steps.csv"
    rounds_path = out_dir / "rounds.csv"
    _write_csv(steps_path, history.get("steps", []))
    validations = [row for row in history.get("units", []) if row.get("phase") == "validation"]
    _write_csv(rounds_path, [{key: value for key, value in row.items() if key not in ("unit", "phase")}
                             for row in validations])
    return {"steps": steps_path, "rounds": rounds_path}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns or ["step"], restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())


def fuse_test_split(params: Params, paths: ProjectPaths, checkpoint: Path) -> dict[str, Path]:
    """Fuse every test pair with our model and the two pixel baselines -> ``<outputs.fused>/<method>/NAME.png``."""
    from uaafusion.data.datasets import create_dataset

    params = with_absolute_data_root(params, paths)
    dataset = create_dataset(params.data, params.data.test_split, crop=False, seed=params.seed)
    return fuse_dataset(dataset, params, checkpoint, paths.fused, "fusing test split")


def fuse_dataset(dataset: Any, params: Params, checkpoint: Path, out_root: Path, description: str,
                 name: str = OUR_METHOD, baselines: bool = True) -> dict[str, Path]:
    """Fuse every sample of ``dataset`` with the model of ``checkpoint`` (-> ``out_root/<name>/NAME.png``)
    and, with ``baselines``, the pixel baselines (-> ``out_root/<baseline>/NAME.png``).

    Colour (docs/method.md §5): the fused luminance takes the visible image's CrCb when it has colour.
    """
    from uaafusion.data.datasets import sample_chroma
    from uaafusion.data.io import tensor_to_array, write_png
    from uaafusion.device import resolve_device
    from uaafusion.inference import compose_colour, fuse_luma, load_models_for_inference

    device = resolve_device(params.device)
    loaded = load_models_for_inference(checkpoint, device)
    fusion, segmenter = loaded.fusion, loaded.segmenter
    folders = {method: out_root / method for method in (name, *(BASELINE_METHODS if baselines else ()))}
    for index in tqdm(range(len(dataset)), desc=description, disable=None):
        sample = dataset[index]
        ir, vi = sample["ir"], sample["vi"]
        chroma = sample_chroma(sample)
        output = fuse_luma(fusion, segmenter, ir[None].to(device), vi[None].to(device))
        outputs = {name: output.fused[0].detach().cpu(),
                   **{method: fuse(ir, vi) for method, fuse in BASELINES.items() if baselines}}
        for method, luma in outputs.items():
            write_png(folders[method] / f"{sample['name']}.png", tensor_to_array(compose_colour(luma, chroma)))
    return folders


def evaluate_step(params: Params, paths: ProjectPaths) -> dict[str, dict[str, float]]:
    """Fuse the test split, score ours, the baselines and any configured peers.

    Writes ``reports/evaluation.json`` (every method, per image and mean), ``reports/metrics.json``
    (the mean metrics per method, for ``dvc metrics``) and ``reports/comparison.json`` (ours against
    every other method and each method against the sources, with bootstrap intervals: the one
    comparison that the report and MLflow read).
    """
    from uaafusion.data.datasets import layout_folders, split_directory
    from uaafusion.device import resolve_device
    from uaafusion.metrics.comparison import compare_methods
    from uaafusion.metrics.evaluate import evaluate_folders
    from uaafusion.models.checkpoint import load_models

    params = with_absolute_data_root(params, paths)
    for name in params.evaluate.generalisation:
        _generalisation_root(params, paths, name)  # fail before the long work, not after it
    fused_folders = fuse_test_split(params, paths, paths.model_checkpoint)
    for name, folder in params.evaluate.peers.items():
        fused_folders[name] = paths.place(folder).resolve()
    device = resolve_device(params.device)
    segmenter = load_models(paths.model_checkpoint, map_location=device).segmenter.to(device).eval()
    folders = layout_folders(params.data.layout,
                             split_directory(params.data.layout, params.data.root, params.data.test_split))
    results = {}
    for method, fused_dir in fused_folders.items():
        LOGGER.info("scoring %s (%s)", method, fused_dir)
        results[method] = evaluate_folders(
            folders.ir, folders.vi, fused_dir,
            labels_dir=folders.label, boxes_dir=folders.boxes, segmenter=segmenter,
            num_classes=params.data.num_classes, class_names=list(params.data.class_names),
            ignore_index=params.data.ignore_index, device=str(device),
        )
    paths.reports.mkdir(parents=True, exist_ok=True)
    write_text_atomically(paths.evaluation, json.dumps(results, indent=1))
    means = {method: result["mean"] for method, result in results.items()}
    write_text_atomically(paths.metrics, json.dumps(means, indent=2))
    comparison = compare_methods(results, OUR_METHOD, skip_unpaired=True)
    write_text_atomically(paths.comparison, json.dumps(comparison.to_json(), indent=1))
    if params.evaluate.generalisation:
        generalisation_step(params, paths)
    elif paths.generalisation.exists():
        paths.generalisation.unlink()  # stale: no generalisation sets configured any more
    return means


def generalisation_step(params: Params, paths: ProjectPaths) -> dict[str, dict[str, dict[str, float]]]:
    """Fuse each unlabeled set of ``evaluate.generalisation`` (``ir/`` + ``vi/`` folders) with the trained
    model and the pixel baselines, score the fusion metrics, write ``<outputs.reports>/generalisation.json``.

    Returns ``{set name: {method: {metric: mean}}}``.
    """
    from uaafusion.config import DataConfig
    from uaafusion.data.datasets import create_dataset, layout_folders, split_directory
    from uaafusion.metrics.evaluate import evaluate_folders

    results: dict[str, dict[str, Any]] = {}
    for name in params.evaluate.generalisation:
        root = _generalisation_root(params, paths, name)
        data = DataConfig(layout="pairs", root=str(root), num_classes=params.data.num_classes,
                          class_names=params.data.class_names, ignore_index=params.data.ignore_index,
                          on_bad_input=params.data.on_bad_input)
        dataset = create_dataset(data, None, crop=False, seed=params.seed)
        fused = fuse_dataset(dataset, params, paths.model_checkpoint, paths.fused / "generalisation" / name,
                             f"fusing {name}")
        sources = layout_folders("pairs", split_directory("pairs", root, None))
        results[name] = {"root": str(root), "methods": {}}
        for method, fused_dir in fused.items():
            LOGGER.info("scoring %s on %s", method, name)
            results[name]["methods"][method] = evaluate_folders(sources.ir, sources.vi, fused_dir)
    paths.reports.mkdir(parents=True, exist_ok=True)
    write_text_atomically(paths.generalisation, json.dumps(results, indent=1))
    return {name: {method: result["mean"] for method, result in entry["methods"].items()}
            for name, entry in results.items()}


def _generalisation_root(params: Params, paths: ProjectPaths, name: str) -> Path:
    """The folder of ``evaluate.generalisation.<name>`` (relative to the project root); it must exist."""
    from uaafusion.errors import DataError

    root = paths.place(params.evaluate.generalisation[name]).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: folder of evaluate.generalisation.{name} not found; it needs ir/ and vi/ "
                        "subfolders of paired images. Fix the path or remove the entry from the params.")
    return root
