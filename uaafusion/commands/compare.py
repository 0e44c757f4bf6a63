"""``uaafusion compare``: differences between evaluated methods, with paired bootstrap confidence intervals."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from uaafusion.errors import ConfigError, DataError

LOGGER = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` sub-command to the ``uaafusion`` parser."""
    from uaafusion.metrics.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED

    parser = subparsers.add_parser(
        "compare",
        help="differences between evaluated methods (and fused vs each source) with bootstrap confidence intervals",
        description=(
            "Read evaluation results (the JSON of `uaafusion evaluate`, or the pipeline's reports/evaluation.json "
            "with every method), and give, for every other method, the reference method minus it on each metric "
            "over the images both scored, with a paired bootstrap interval (the test images drawn with "
            "replacement, the same draws for both methods). Set-level segmentation metrics (mIoU, box_mIoU and "
            "their _ir/_vi variants) are recomputed from the per-image confusion matrices on each draw; each "
            "method's fused images are also compared with the same segmenter on each source alone."
        ),
    )
    parser.add_argument("results", nargs="+", metavar="[NAME=]FILE",
                        help="evaluation JSON files; a single result is named NAME (default: the file name "
                             "without .json), a pipeline evaluation.json brings its own method names")
    parser.add_argument("--reference", help="the method the others are compared with (default: ours if present, "
                                            "else the first)")
    parser.add_argument("--metrics", help="comma-separated metrics (default: every metric both results have)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap draws (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                        help=f"interval coverage, between 0 and 1 (default {DEFAULT_CONFIDENCE})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the draws (default {DEFAULT_SEED})")
    parser.add_argument("--select", metavar="PATTERN",
                        help="compare only the images whose name matches this shell-style pattern, e.g. '*N' for "
                             "MSRS's night images (quote it)")
    parser.add_argument("--per-class", action="store_true",
                        help="also compare the IoU of every class (IoU/<class>, box_IoU/<class>)")
    parser.add_argument("--out", type=Path, help="JSON file to write the differences to")
    parser.set_defaults(func=run)


def read_methods(specs: list[str]) -> dict[str, dict]:
    """``{method: result}`` from ``[NAME=]FILE`` arguments; a repeated method name is an error."""
    from uaafusion.metrics.comparison import named_results

    methods: dict[str, dict] = {}
    for spec in specs:
        name, separator, file_name = spec.partition("=")
        path = Path(file_name if separator else spec)
        default_name = name if separator else path.stem
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: evaluation result not found; write it with `uaafusion evaluate --out`.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: cannot be read as JSON ({error}); re-run `uaafusion evaluate`.") from None
        if not isinstance(document, dict):
            raise DataError(f"{path}: not an evaluation result (a JSON object is expected); pass the JSON that "
                            "`uaafusion evaluate --out` writes.")
        for method, result in named_results(document, default_name, str(path)).items():
            if method in methods:
                raise ConfigError(f"method {method!r} is given twice ({path}); name the results apart: NAME=FILE.")
            methods[method] = dict(result)
    return methods


def run(args: argparse.Namespace) -> int:
    """Compare, print one table per method, write ``--out``; returns the exit code (0)."""
    from uaafusion.method_names import OUR_METHOD
    from uaafusion.metrics.comparison import compare_methods, format_difference

    methods = read_methods(args.results)
    reference = args.reference or (OUR_METHOD if OUR_METHOD in methods else next(iter(methods)))
    if reference not in methods:
        raise ConfigError(f"--reference {reference!r} is none of the methods read: {', '.join(methods)}.")
    metrics = [name.strip() for name in args.metrics.split(",") if name.strip()] if args.metrics else None
    settings = {"resamples": args.resamples, "confidence": args.confidence, "seed": args.seed}
    comparison = compare_methods(methods, reference, metrics, select=args.select, per_class=args.per_class,
                                 **settings)

    sections = [(f"{reference} - {method}", differences) for method, differences in comparison.against.items()]
    sections += [(f"{method}: fused - each source alone", differences)
                 for method, differences in comparison.sources.items()]
    for title, differences in sections:
        print(f"\n{title} ({args.confidence:.0%} interval over the images, {args.resamples} draws)")
        width = max([len("metric")] + [len(metric) for metric in differences])
        for metric, difference in differences.items():
            print(f"  {metric:<{width}}  {format_difference(difference):<32} {difference.verdict}")
    if args.out is not None:
        document = {**comparison.to_json(), **settings, "select": args.select, "inputs": args.results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from uaafusion.integrity import write_text_atomically

        write_text_atomically(args.out, json.dumps(document, indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {args.out}")
    return 0
