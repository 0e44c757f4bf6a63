"""How close the fast inference mode stays to the exact one on real pairs:
``python -m benchmarks.inference_quality --checkpoint A.pt [--checkpoint B.pt] [--pairs N] [--out FILE]``.

For each checkpoint, every pair of ``--split`` (default: the 60 MSRS test pairs) is fused in both
modes; the fused images are scored with the project's fusion metrics against their sources, and
compared with each other. Written per checkpoint: the mean of each metric per mode, the relative
difference of the means (fast vs exact, %), the mean absolute difference of the fused images in grey
levels (mean over pairs and the worst pair), seconds per pair, and whether the issue's bar is met
(VIF, Qabf and SSIM within 1 %, mean absolute difference within 1 grey level). Default output:
``reports/inference-quality.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import log, machine_info, utc_now, version_info

DEFAULT_SPLIT = Path("..") / "shared" / "datasets" / "msrs-boxes" / "test"
BAR_METRICS: tuple[str, ...] = ("VIF", "Qabf", "SSIM")
BAR_PERCENT = 1.0
BAR_GREY_LEVELS = 1.0


def compare_modes(checkpoint: Path, split: Path, pairs: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Fuse ``split`` (``ir/`` and ``vi/``) in both modes with ``checkpoint``; the record described above."""
    from uaafusion.data.io import read_image
    from uaafusion.data.pairs import find_pairs
    from uaafusion.fuser import Fuser
    from uaafusion.metrics.fusion import fusion_metrics

    found = find_pairs(split / "ir", split / "vi")
    if pairs is not None:
        found = [found[index] for index in np.linspace(0, len(found) - 1, pairs).round().astype(int)]
    fuser = Fuser.from_checkpoint(checkpoint, device=device)
    scores: dict[str, list[dict[str, float]]] = {"exact": [], "fast": []}
    seconds: dict[str, list[float]] = {"exact": [], "fast": []}
    differences: list[float] = []
    for index, pair in enumerate(found):
        ir, vi = read_image(pair.ir_path), read_image(pair.vi_path)
        fused: dict[str, np.ndarray] = {}
        for mode in ("exact", "fast"):
            fuser.mode = mode
            started = time.perf_counter()
            fused[mode] = fuser.fuse(ir, vi)
            seconds[mode].append(time.perf_counter() - started)
            scores[mode].append(fusion_metrics(fused[mode], ir, vi))
        differences.append(float(np.abs(fused["fast"].astype(np.float64) - fused["exact"]).mean()))
        log(f"{checkpoint} {index + 1}/{len(found)} {pair.name}: MAD {differences[-1]:.3f}")
    means = {mode: {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
             for mode, rows in scores.items()}
    relative = {name: 100.0 * (means["fast"][name] - means["exact"][name]) / abs(means["exact"][name])
                for name in means["exact"] if means["exact"][name]}
    mad = {"mean": float(np.mean(differences)), "worst_pair": float(np.max(differences))}
    met = all(abs(relative[name]) <= BAR_PERCENT for name in BAR_METRICS) and mad["mean"] <= BAR_GREY_LEVELS
    return {"checkpoint": str(checkpoint), "split": str(split), "pairs": len(found), "means": means,
            "relative_difference_percent": relative, "mean_absolute_difference_grey_levels": mad,
            "seconds_per_pair": {mode: float(np.median(values)) for mode, values in seconds.items()},
            "bar": {"metrics": list(BAR_METRICS), "percent": BAR_PERCENT, "grey_levels": BAR_GREY_LEVELS},
            "met": met}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", type=Path, required=True, help="models checkpoint (repeat)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="folder with ir/ and vi/ (default: MSRS test)")
    parser.add_argument("--pairs", type=int, default=None, help="pairs spread evenly over the split (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("reports") / "inference-quality.json")
    args = parser.parse_args(argv)
    from uaafusion.device import resolve_device

    device = resolve_device(args.device)
    results = {str(path): compare_modes(path, args.split, args.pairs, str(device)) for path in args.checkpoint}
    document = {"created": utc_now(), "command": " ".join(sys.argv), "device": str(device),
                "machine": machine_info(device), "versions": version_info(), "checkpoints": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    for path, result in results.items():
        relative = ", ".join(f"{name} {result['relative_difference_percent'][name]:+.2f}%" for name in BAR_METRICS)
        print(f"{path}: {relative}, MAD {result['mean_absolute_difference_grey_levels']['mean']:.2f} "
              f"-> {'met' if result['met'] else 'NOT met'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
