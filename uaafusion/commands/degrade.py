"""``uaafusion degrade``: degraded copies of infrared/visible image pairs (docs/degradations.md).

    uaafusion degrade --ir DIR --vi DIR --out DIR --kind KIND [--kind KIND ...] --severity S --seed N
    uaafusion degrade --list
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``degrade`` sub-command."""
    parser = subparsers.add_parser(
        "degrade",
        help="write degraded copies of image pairs (haze, rain, low light, noise, stripes, ...)",
        description="Degrade the pairs of --ir and --vi (paired by file name) and write OUT/ir and OUT/vi "
                    "under the same file names; the image a kind does not touch is copied unchanged. Repeat "
                    "--kind to compose kinds (applied in the order given). The same seed, kinds, severity and "
                    "file name give the same bytes. Nothing is written when an input is bad.",
    )
    parser.add_argument("--list", action="store_true", help="list the degradation kinds and exit")
    parser.add_argument("--ir", type=Path, help="folder of infrared images")
    parser.add_argument("--vi", type=Path, help="folder of visible images")
    parser.add_argument("--out", type=Path, help="output folder (gets ir/, vi/ and degradation.json)")
    parser.add_argument("--kind", action="append", default=[], help="degradation kind (repeatable); see --list")
    parser.add_argument("--severity", type=float, default=0.5, help="strength in [0, 1] (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--depth", type=Path, help="optional folder of depth maps NAME.* for haze (brighter = farther)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List the kinds, or degrade the folders; returns the exit code."""
    from uaafusion.data.degrade import DEGRADATIONS
    from uaafusion.data.degraded_sets import degrade_folders
    from uaafusion.errors import ConfigError

    if args.list:
        width = max(len(name) for name in DEGRADATIONS)
        for name, kind in DEGRADATIONS.items():
            print(f"{name:<{width}}  {kind.source}  {kind.summary}")
        return 0
    missing = [flag for flag, value in (("--ir", args.ir), ("--vi", args.vi), ("--out", args.out)) if value is None]
    if missing or not args.kind:
        needed = missing + ([] if args.kind else ["--kind"])
        raise ConfigError(f"uaafusion degrade needs {', '.join(needed)} (or --list); kinds: {', '.join(DEGRADATIONS)}.")
    started = time.perf_counter()
    manifest = degrade_folders(args.ir, args.vi, args.out, args.kind, args.severity, args.seed,
                               depth_dir=args.depth, overwrite=args.overwrite)
    print(f"wrote {manifest['count']} pairs to {args.out} ({' + '.join(manifest['kinds'])}, severity "
          f"{manifest['severity']}, seed {manifest['seed']}) in {time.perf_counter() - started:.1f} s")
    return 0
