"""The benchmark suite: ``python -m benchmarks``.

Sections (``--only``, comma-separated; default all but ``methods``, ``distributed`` and ``pipeline``):

- ``attribution``: weight maps, batched :func:`~uaafusion.attribution.modality_weights` (one
  variant per engine: on CPU the params' engine, on CUDA all) vs the per-class loop, same numbers
  checked (relative difference of the region scores <= 1e-4), over a grid of cases: on CPU a
  reduced grid by default (the headline C=9, steps=5, batch 8, 256x256 and five cheaper cases),
  on CUDA or with ``--full-grid`` all 24 cases (C in {4, 9, 15}, steps in {5, 10}, 256x256 and
  640x480, batch 1 and 8) (:mod:`benchmarks.attribution`);
- ``training``: one fusion-stage step with and without the attribution cache, one
  segmentation-stage step, with the params' batch and with the batch of the attribution headline
  case (``training/headline/...``, every class present) (:mod:`benchmarks.training`);
- ``inference``: ``Fuser.fuse`` per pair in the exact and fast modes at 640x480 and 1280x1024
  (seconds and peak resident memory, one process per case), a profile of one 640x480 pair, and
  ``Fuser.fuse_folder`` over the 60 MSRS test pairs (:mod:`benchmarks.inference`);
- ``metrics``: the nine fusion metrics over 60 images of 640x480 (:mod:`benchmarks.metrics`);
- ``degrade``: every degradation kind applied to the 60 MSRS test pairs, files in and out
  (:mod:`benchmarks.degrade`);
- ``methods`` (only with ``--only``): per method preset (``params/methods/*.yaml``), one fusion-stage
  training step at its batch and one 640x480 pair fused with its trained model, for the methods
  comparison (:mod:`benchmarks.methods`);
- ``distributed`` (only with ``--only``): samples per second of one training round in one process of
  N threads against N processes of one thread under torchrun (on CUDA: 1 GPU against N GPUs), N =
  ``--processes`` (:mod:`benchmarks.distributed`);
- ``pipeline``: ``dvc repro`` of the embedded default in a fresh copy of the project, minutes
  (:mod:`benchmarks.pipeline`); when not run, the number last stored in
  ``reports/pipeline-timing.json`` is included (with its date).

The JSON file holds ``machine``, ``versions``, ``sections`` (what ran, when, with which settings),
``cases`` (one flat record per measured case: ``median_s``, ``min_s``, ``max_s``, ``stdev_s``,
``repeats``, ``runs_s``, ``warmup`` and the case's parameters), ``ratios`` (speed-ups) and
``targets``. With ``--only``, an existing file of the same device is updated: the other sections
are kept as they were. ``--profile`` writes ``reports/profile-<device>.txt`` (torch.profiler's top
operators of one fusion training step and one attribution call).

``--quick`` shrinks everything (tiny images, models and repeats) to prove the code runs in a few
seconds; its numbers mean nothing and go to ``reports/benchmarks[-cuda]-quick.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.timing import log, machine_info, torch_threads, usable_cores, utc_now, version_info
from uaafusion.attribution import ATTRIBUTION_ENGINES

SECTIONS: tuple[str, ...] = ("attribution", "training", "inference", "metrics", "degrade", "methods", "distributed",
                             "pipeline")
DEFAULT_SECTIONS: tuple[str, ...] = SECTIONS[:-3]
SCHEMA_VERSION = 1
# --quick: tiny models and images for the training and inference sections.
QUICK_PARAM_OVERRIDES: dict[str, Any] = {
    "synthetic.height": 48, "synthetic.width": 48, "data.crop_size": 32, "data.batch_size": 2,
    "model.fusion.stages": 2, "model.fusion.features": 8, "attribution.steps": 2,
}
QUICK_METRICS = {"count": 3, "height": 48, "width": 64}
FULL_METRICS = {"count": 60, "height": 480, "width": 640}
# Batched attribution vs the per-class loop in the headline case (C 9, steps 5, batch 8, 256x256).
ATTRIBUTION_SPEEDUP_TARGETS: dict[str, float] = {"cpu": 1.5, "cuda": 5.0}


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names from ``allowed``, in the given order, without repeats."""
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown) or '(none given)'}; allowed: "
                                             f"{', '.join(allowed)} (comma-separated)")
        return names
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Speed benchmarks of uaafusion "
                                     "(attribution, training steps, inference, metrics, pipeline): JSON in reports/.")
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny sizes and repeats: proves the code runs; numbers mean nothing")
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    add("--only", type=_names((*SECTIONS, "none")), metavar="SECTIONS",
        help=f"sections to run (default: {','.join(DEFAULT_SECTIONS)}; 'none' with --profile: only profile)")
    add("--out", type=Path, help="JSON file (default: reports/benchmarks.json, reports/benchmarks-cuda.json on "
                                 "CUDA; '-quick' before .json with --quick)")
    add("--full-grid", action="store_true", help="attribution: all 24 cases (default on CUDA; on CPU the "
                                                 "headline case and 5 cheaper ones)")
    add("--headline-only", action="store_true", help="attribution: only the headline case (C9, steps 5, batch 8, "
                                                     "256x256)")
    add("--engines", type=_names(ATTRIBUTION_ENGINES), help="attribution engines of the batched variants (default: "
                                                            "the params'; on CUDA all, the params' first)")
    add("--repeats", type=int, help="timed runs per case (default 3; 2 with --quick)")
    add("--warmup", type=int, default=1, help="untimed runs before the timed ones (default 1)")
    add("--params", type=Path, help="params of the models and batch (default: params.yaml under --root, else "
                                     "the package defaults)")
    add("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a param, e.g. -S train.amp=true")
    add("--root", type=Path, default=Path("."), help="project root: reports/ and the pipeline's source (default: .)")
    add("--checkpoint", help="inference: models checkpoint (default: models/uaafusion.pt under --root when it "
                             "exists, else the params' models untrained; 'none': always untrained)")
    add("--threads", type=int, help="torch intra-op threads (default: torch's)")
    add("--profile", action="store_true", help="also profile one fusion training step and one attribution call "
                                               "into reports/profile-<device>.txt")
    add("--processes", type=int, help="distributed: processes to compare with one (default: the GPUs on CUDA, "
                                       "else the usable cores)")
    add("--pipeline-repeats", type=int, default=1, help="pipeline: fresh copies to time (default 1; minutes each)")
    add("--pipeline-timeout", type=float, help="pipeline: give up after this many seconds (default: no limit)")
    add("--keep-pipeline-copy", action="store_true", help="pipeline: keep the temporary project copy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks``: run the suite, write the JSON, print a summary; returns the exit code."""
    from uaafusion.allocator import keep_freed_memory
    from uaafusion.errors import UAAFusionError

    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        document, out = run_suite(args)
    except UAAFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(document))
    print(f"wrote {out}")
    if "profile" in document.get("files", {}):
        print(f"wrote {document['files']['profile']}")
    return 0


def load_suite_params(args: argparse.Namespace) -> tuple[Any, str]:
    """``(params, where from)``: ``--params``, else ``params.yaml`` under ``--root``, else the package
    defaults; then ``-S`` overrides (after ``--quick``'s)."""
    from uaafusion.config import load_params, params_from_dict, parse_overrides

    overrides = {**(QUICK_PARAM_OVERRIDES if args.quick else {}), **parse_overrides(args.set)}
    path = args.params if args.params is not None else args.root / "params.yaml"
    given = "".join(f" -S {item}" for item in args.set)
    if args.params is None and not path.is_file():
        return params_from_dict({}, overrides, source="package defaults"), "package defaults" + given
    return load_params(path, overrides), str(path) + given


def inference_checkpoint(args: argparse.Namespace) -> Path | None:
    """``--checkpoint``, else the project's trained models when present (not with ``--quick``: tiny
    params), else None (the params' models, untrained)."""
    from uaafusion.errors import ConfigError

    if args.checkpoint is None:
        default = args.root / "models" / "uaafusion.pt"
        return default if default.is_file() and not args.quick else None
    if args.checkpoint.lower() == "none":
        return None
    if not Path(args.checkpoint).is_file():
        raise ConfigError(f"--checkpoint {args.checkpoint}: file not found (or pass 'none' for untrained models).")
    return Path(args.checkpoint)


def default_out(root: Path, device: torch.device, quick: bool) -> Path:
    name = "benchmarks" if device.type == "cpu" else f"benchmarks-{device.type}"
    return root / "reports" / f"{name}{'-quick' if quick else ''}.json"


def run_suite(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run the selected sections; write and return ``(document, path written)``."""
    from benchmarks import attribution, degrade, distributed, inference, methods, metrics, pipeline, training
    from uaafusion.device import resolve_device

    started = time.perf_counter()
    sections = list(DEFAULT_SECTIONS) if args.only is None else [name for name in SECTIONS if name in args.only]
    device = resolve_device(args.device)
    out = args.out if args.out is not None else default_out(args.root, device, args.quick)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    warmup = max(0, args.warmup)
    params, params_source = load_suite_params(args)
    checkpoint = inference_checkpoint(args) if "inference" in sections else None
    load_at_start = busy_machine_warning()
    cases: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    common = {"repeats": repeats, "warmup": warmup, "device": str(device)}
    with torch_threads(args.threads):
        for name in sections:
            at = time.perf_counter()
            if name == "attribution":
                grid_name, grid = (
                    ("quick", attribution.quick_grid()) if args.quick
                    else ("headline only", [attribution.HEADLINE_CASE]) if args.headline_only
                    else ("full", attribution.full_grid()) if args.full_grid
                    else ("full (default on CUDA)", attribution.full_grid()) if device.type == "cuda"
                    else ("reduced (CPU default; --full-grid for all 24 cases)", attribution.reduced_grid()))
                engine = params.attribution.engine
                engines = args.engines or ([engine, *(e for e in ATTRIBUTION_ENGINES if e != engine)]
                                           if device.type == "cuda" else [engine])
                found, found_ratios = attribution.run_weights_grid(grid, params, device, repeats, warmup, engines)
                info[name] = {**common, "grid": grid_name, "engines": engines, "cases_run": [c.key for c in grid],
                              "case_params": [c.as_dict() for c in grid], "headline": attribution.HEADLINE_CASE.key,
                              "check": "region scores of every batched variant within 1e-4 (relative) of the "
                                       "per-class loop's"}
            elif name == "training":
                headline = attribution.quick_grid()[0] if args.quick else attribution.HEADLINE_CASE
                found, found_ratios = training.benchmark_training_settings(params, headline, device, repeats, warmup,
                                                                           params.seed)
                info[name] = {**common, "params": params_source, "quick": args.quick, "settings": training.SETTINGS,
                              "headline_case": headline.key}
            elif name == "inference":
                sizes = inference.QUICK_SIZES if args.quick else inference.DEFAULT_SIZES
                found = inference.benchmark_inference(params, device, sizes, repeats, warmup, checkpoint, params.seed,
                                                      args.root, folder=not args.quick, threads=args.threads)
                found_ratios = {}
                info[name] = {**common, "sizes": [list(size) for size in sizes], "modes": list(inference.MODES),
                              "models": str(checkpoint) if checkpoint else f"untrained ({params_source})",
                              "process": "one fresh process per case (peak memory of that process)"}
            elif name == "metrics":
                setting = QUICK_METRICS if args.quick else FULL_METRICS
                log(f"metrics: {setting['count']} images of {setting['width']}x{setting['height']}")
                record = metrics.benchmark_metrics(**setting, repeats=repeats, seed=params.seed)
                found, found_ratios = {f"metrics/{setting['count']}x{setting['width']}x{setting['height']}": record}, {}
                info[name] = {"repeats": repeats, "warmup": "one fusion_metrics call", **setting}
            elif name == "degrade":
                found, found_ratios = degrade.benchmark_degrade(args.root, args.quick, repeats, params.seed), {}
                info[name] = {"repeats": repeats, "warmup": 0}
            elif name == "methods":
                from uaafusion.config import parse_overrides

                overrides = {**(QUICK_PARAM_OVERRIDES if args.quick else {}), **parse_overrides(args.set)}
                found = methods.benchmark_methods(args.root, device, repeats, warmup, args.quick, overrides, params.seed,
                                                  args.threads)
                found_ratios = {}
                info[name] = {**common, "presets": [str(path) for path in methods.method_presets(args.root)],
                              "what": "per method preset: one cached fusion-stage step at its batch; one 640x480 pair "
                                      "fused with its trained model (fresh process, the checkpoint's inference mode)"}
            elif name == "distributed":
                processes = args.processes or (torch.cuda.device_count() if device.type == "cuda" else usable_cores())
                found = distributed.benchmark_distributed(params, device.type, max(2, processes or 2), repeats,
                                                      args.quick)
                one, many = sorted(found.values(), key=lambda case: case["processes"])
                found_ratios = {f"distributed/{many['processes']}_processes_vs_1": many["samples_per_s"] / one["samples_per_s"]}
                info[name] = {"repeats": repeats, "warmup": 0, "params": params_source,
                              "what": "samples per second of round 1 (attribution weights, fusion and segmentation "
                                      "stages) from untrained models"}
            else:
                record = pipeline.benchmark_pipeline(args.root, args.pipeline_repeats, args.quick,
                                                     args.keep_pipeline_copy, args.pipeline_timeout)
                found = {"pipeline/dvc-repro": {**record, "source": "measured now"}}
                found_ratios = {}
                info[name] = {"ran": True, "repeats": args.pipeline_repeats, "quick": args.quick}
            cases.update(found)
            ratios.update(found_ratios)
            info[name]["seconds"] = time.perf_counter() - at
        stored = None if "pipeline" in sections else pipeline.read_pipeline_timing(args.root)
        if stored is not None:
            cases["pipeline/dvc-repro"] = {**stored, "source": str(pipeline.PIPELINE_TIMING_FILE)}
            info["pipeline"] = {"ran": False, "source": str(pipeline.PIPELINE_TIMING_FILE),
                                "measured_at": stored.get("measured_at")}
        for record in cases.values():
            record.pop("machine", None)
            record.pop("versions", None)
        if args.profile:
            log("profile: one fusion training step and one attribution call")
            path = args.root / "reports" / f"profile-{device.type}{'-quick' if args.quick else ''}.txt"
            files["profile"] = str(training.profile_steps(params, device, path))
        measured_at = utc_now()
        for section in info.values():
            section.setdefault("measured_at", measured_at)
        document: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "created": measured_at, "command": " ".join(sys.argv) if sys.argv else None,
            "quick": bool(args.quick), "device": str(device),
            "machine": {**machine_info(device), "load_average_at_start": load_at_start},
            "versions": version_info(), "params": params_source, "sections": info, "cases": cases, "ratios": ratios,
        }
    if args.only is not None:
        _merge_into_existing(out, document, list(info))
    document["targets"] = targets(document)
    if files:
        document["files"] = files
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    log(f"done in {time.perf_counter() - started:.1f} s")
    return document, out


def busy_machine_warning() -> list[float] | None:
    """The load average now; logs a warning when other work seems to be running (the numbers would be
    slower and noisier, and torch's threads spin badly on cores that are taken)."""
    if not hasattr(os, "getloadavg"):
        return None
    load = list(os.getloadavg())
    cores = usable_cores() or 1
    if load[0] > max(0.5, 0.25 * cores):
        log(f"warning: load average {load[0]:.2f} on {cores} usable cores: other work is running; "
            "run the benchmarks on a quiet machine for numbers worth reporting")
    return load


def _merge_into_existing(path: Path, document: dict[str, Any], ran: list[str]) -> None:
    """Keep the sections (and their cases and ratios) of an existing file of the same device and mode
    that did not run now."""
    try:
        existing = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if existing.get("device") != document["device"] or bool(existing.get("quick")) != document["quick"]:
        return
    for part in ("sections", "cases", "ratios"):
        kept = {key: value for key, value in existing.get(part, {}).items() if key.split("/", 1)[0] not in ran}
        document[part] = {**kept, **document[part]}


def targets(document: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets met or not, from a document's ratios and cases."""
    from benchmarks.attribution import HEADLINE_CASE
    from benchmarks.degrade import FULL_SET as DEGRADE_SET
    from benchmarks.degrade import TARGET_S as DEGRADE_TARGET_S
    from benchmarks.inference import inference_targets
    from benchmarks.metrics import TARGET_S
    from benchmarks.training import CACHE_SPEEDUP_TARGET, HEADLINE_PREFIX, PARAMS_PREFIX, SETTINGS

    found: dict[str, Any] = {}
    ratios = document.get("ratios", {})
    # The cache target in both training settings (the issue names no batch for it).
    for prefix in (HEADLINE_PREFIX, PARAMS_PREFIX):
        ratio = ratios.get(f"{prefix}/cache_speedup")
        if ratio is not None:
            found[f"{prefix}/cache_speedup"] = {"target": f">= {CACHE_SPEEDUP_TARGET:g}x", "value": ratio,
                                                "met": ratio >= CACHE_SPEEDUP_TARGET, "setting": SETTINGS[prefix]}
    key = f"attribution/{HEADLINE_CASE.key}"
    if key in ratios:
        wanted = ATTRIBUTION_SPEEDUP_TARGETS["cuda" if str(document.get("device", "cpu")).startswith("cuda") else "cpu"]
        found[key] = {"target": f">= {wanted:g}x", "value": ratios[key], "met": ratios[key] >= wanted}
    key = f"metrics/{FULL_METRICS['count']}x{FULL_METRICS['width']}x{FULL_METRICS['height']}"
    if key in document.get("cases", {}):
        value = document["cases"][key]["median_s"]
        found[key] = {"target": f"< {TARGET_S:g} s", "value": value, "met": value < TARGET_S}
    found.update(inference_targets(document.get("cases", {})))
    key = f"degrade/{DEGRADE_SET['count']}-pairs-all-kinds"
    if key in document.get("cases", {}):
        value = document["cases"][key]["median_s"]
        found[key] = {"target": f"< {DEGRADE_TARGET_S:g} s", "value": value, "met": value < DEGRADE_TARGET_S}
    return found


def format_summary(document: dict[str, Any]) -> str:
    """A plain-text table of every case (median, min, max) and the ratios and targets."""
    def seconds(value: float) -> str:
        return f"{value:8.2f} s" if value >= 1.0 else f"{value * 1000:7.1f} ms"

    machine, versions = document.get("machine", {}), document.get("versions", {})
    cuda = machine.get("cuda_device") or {}
    lines = [
        f"uaafusion benchmarks on {document.get('device')}"
        + (" (quick: numbers mean nothing)" if document.get("quick") else ""),
        f"  CPU {machine.get('cpu_model')} ({machine.get('usable_cores')} usable cores, "
        f"{machine.get('torch_threads')} torch threads)" + (f", GPU {cuda.get('name')}" if cuda else ""),
        f"  torch {versions.get('torch')}, smp {versions.get('smp')}, captum {versions.get('captum')}",
        "", f"  {'case':<52} {'median':>11} {'min':>11} {'max':>11}  n",
    ]
    for key, case in document.get("cases", {}).items():
        extra = (f"  x{case['speedup']:.2f} vs loop" if "speedup" in case
                 else f"  {case['peak_rss_gib']:.2f} GiB peak RSS" if "peak_rss_gib" in case
                 else f"  {case['peak_memory_mib']:.0f} MiB peak" if "peak_memory_mib" in case
                 else f"  {case['images_per_s']:.2f} img/s" if "images_per_s" in case else "")
        lines.append(f"  {key:<52} {seconds(case['median_s'])} {seconds(case['min_s'])} {seconds(case['max_s'])}  "
                     f"{case.get('repeats')}{extra}")
    if document.get("ratios"):
        lines += ["", "  ratios (slow / fast):"] + [f"    {key:<50} {value:8.2f}x"
                                                     for key, value in document["ratios"].items()]
    lines += [f"  target {key}: {target['target']}, got {target['value']:.4g} -> "
              f"{'met' if target['met'] else 'NOT met'}" for key, target in document.get("targets", {}).items()]
    return "\n".join(lines)
