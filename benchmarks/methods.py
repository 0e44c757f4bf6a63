"""The ``methods`` section: what each method preset (``params/methods/*.yaml``) costs, for the methods
comparison's table (``uaafusion compare-methods``).

Per preset, with its own params: ``methods/<name>/fusion-step``, one fusion-stage training step with
the attribution cache at the preset's batch (:class:`benchmarks.training.TrainingBench`), and
``methods/<name>/fuse-640x480``, ``Fuser.fuse`` of the MSRS example pair at 640x480 with the preset's
trained model in the checkpoint's inference mode, in a fresh process (the inference section's runner).
A preset whose model is not trained yet is timed with its untrained models (``models`` says so).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.inference import MSRS_TEST, _example_pair, _models_file, _resized, run_case
from benchmarks.timing import log, time_call
from benchmarks.training import TrainingBench

METHOD_PRESETS = Path("params") / "methods"
FUSE_SIZE = (640, 480)
QUICK_FUSE_SIZE = (64, 48)


def method_presets(root: Path) -> list[Path]:
    """The method presets under ``root``, sorted by name."""
    return sorted((root / METHOD_PRESETS).glob("*.yaml"))


def benchmark_methods(root: Path, device: torch.device, repeats: int, warmup: int, quick: bool,
                      overrides: dict[str, Any], seed: int = 0, threads: int | None = None,
                      ) -> dict[str, dict[str, Any]]:
    """Records ``methods/<name>/fusion-step`` and ``methods/<name>/fuse-<W>x<H>`` for every preset (with
    ``overrides`` applied: ``--quick`` shrinks the models and images)."""
    from uaafusion.config import load_params
    from uaafusion.data.io import write_png
    from uaafusion.errors import ConfigError
    from uaafusion.paths import ProjectPaths

    presets = method_presets(root)
    if not presets:
        raise ConfigError(f"methods: no presets in {root / METHOD_PRESETS}; run the suite at the project root (--root).")
    width, height = QUICK_FUSE_SIZE if quick else FUSE_SIZE
    records: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="uaafusion-methods-bench-") as scratch:
        work = Path(scratch)
        for preset in presets:
            params = load_params(preset, overrides)
            name = params.model.fusion.name
            log(f"methods: {name}: fusion step")
            bench = TrainingBench(params, device, seed)
            bench.prepare_fusion()
            summary, _ = time_call(bench.step_with_cache, device, repeats, warmup)
            records[f"methods/{name}/fusion-step"] = {**summary, **bench.case_params(), "preset": str(preset),
                                                     "images_per_s": bench.batch_size / summary["median_s"]}
            trained = ProjectPaths.at(root, params.outputs).model_checkpoint
            checkpoint = trained if trained.is_file() and not quick else None
            models, source = _models_file(params, torch.device("cpu"), checkpoint, work / name)
            ir, vi, pair_source = _example_pair((root / MSRS_TEST).resolve(), params, (width, height), seed)
            ir_path = write_png(work / name / "ir.png", _resized(ir, width, height))
            vi_path = write_png(work / name / "vi.png", _resized(vi, width, height))
            log(f"methods: {name}: fuse {width}x{height}")
            record = run_case({"task": "pair", "mode": None, "checkpoint": str(models), "device": str(device),
                               "threads": threads, "ir": str(ir_path), "vi": str(vi_path), "repeats": repeats,
                               "warmup": warmup})
            records[f"methods/{name}/fuse-{width}x{height}"] = {
                **record, "width": width, "height": height, "ms_per_image": 1000.0 * record["median_s"],
                "pair": pair_source, "models": source, "preset": str(preset)}
    return records
