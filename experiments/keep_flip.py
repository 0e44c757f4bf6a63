"""Where the people go that the guard's ``keep`` loses (discussion item 27).

The guard with ``keep car`` leaves the fused image's cars out of the return to infrared, and on the
training pairs it gives cars back but loses people. This script guards each saved fused image of a
labelled split twice, as ``experiments/guard_sweep.py`` does (once plainly, once with the kept
classes), predicts both, and counts pixels against the box masks:

- ``kept``: the kept pixels (``Guard.kept`` > 0.5), by the box class they lie in;
- ``person_lost``: person pixels (in a person box) the plain guard finds and the keeping one does not,
  split by whether they lie on kept pixels (``kept`` > 0, the fade included) and by what the keeping
  guard calls them instead;
- ``false_person_added``: false person pixels (outside every person box) the keeping guard marks and
  the plain one does not, split the same way, and how many of them the fused image called a kept class;
- the totals of true and false person pixels of both guards. ::

    python experiments/keep_flip.py --checkpoint models/msrs-base-here/uaafusion.pt \\
        --split ../shared/datasets/msrs-boxes/train --fused data/fused-msrs-base-here-train/ours \\
        --radius 16 --sigma 16 --keep car --keep-sigma 4 --out reports/msrs-base-here/keep-flip.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.guard_sweep import CLASS_NAMES, class_ids, make_guard  # noqa: E402
from experiments.record import write_record  # noqa: E402
from experiments.region_swap import read_test_triples  # noqa: E402
from uaafusion.data.boxes import boxes_to_class_mask  # noqa: E402
from uaafusion.device import resolve_device  # noqa: E402
from uaafusion.guard import GUARD_GAIN, Guard  # noqa: E402
from uaafusion.inference import load_models_for_inference, predict_classes  # noqa: E402

PERSON = CLASS_NAMES.index("person")


def _by_class(classes: torch.Tensor, where: torch.Tensor) -> dict[str, int]:
    """Pixels of ``where`` (bool) by the class ``classes`` gives them, by name."""
    return {name: int((where & (classes == class_id)).sum()) for class_id, name in enumerate(CLASS_NAMES)}


def _split_by_kept(where: torch.Tensor, kept: torch.Tensor, replaced_by: torch.Tensor) -> dict[str, Any]:
    """``{"pixels", "on_kept", "off_kept", "called"}`` for the pixels of ``where``: how many lie on kept
    pixels (the fade included), how many do not, and what ``replaced_by`` calls them."""
    return {"pixels": int(where.sum()), "on_kept": int((where & kept).sum()), "off_kept": int((where & ~kept).sum()),
            "called": _by_class(replaced_by, where)}


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    """``total += part``, key by key, nested dicts of ints."""
    for key, value in part.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


def keep_flip(segmenter: torch.nn.Module, split: Path, fused: Path, plain: Guard, keeping: Guard,
              device: torch.device) -> dict[str, Any]:
    """The pixel counts described in the module docstring, summed over the pairs of ``split``."""
    if not keeping.keep:
        raise ValueError("the keeping guard has no keep classes: give --keep")
    totals: dict[str, Any] = {}
    for _, images, boxes in read_test_triples(split, {"fused": fused}):
        height, width = images["ir"].shape
        target = torch.from_numpy(boxes_to_class_mask(boxes, height, width)).to(device)
        ir, fused_luma = (torch.from_numpy(images[key]).to(device, torch.float32).div(255.0)[None, None]
                          for key in ("ir", "fused"))
        ir_classes, fused_classes = predict_classes(segmenter, ir), predict_classes(segmenter, fused_luma)
        predictions = {}
        for key, guard in (("plain", plain), ("keep", keeping)):
            guarded, _ = guard.guarded(fused_luma, ir, fused_classes, ir_classes)
            predictions[key] = predict_classes(segmenter, guarded.mul(255.0).round().div(255.0))[0]
        kept_weight = keeping.kept(fused_classes, ir_classes)[0, 0]
        kept, kept_core = kept_weight > 0, kept_weight > 0.5
        is_person = target == PERSON
        plain_person, keep_person = predictions["plain"] == PERSON, predictions["keep"] == PERSON
        fused_kept_class = torch.zeros_like(kept)
        for class_id in keeping.keep:
            fused_kept_class |= fused_classes[0] == class_id
        added = keep_person & ~plain_person & ~is_person
        _add(totals, {
            "kept": _by_class(target, kept_core),
            "person_lost": _split_by_kept(is_person & plain_person & ~keep_person, kept, predictions["keep"]),
            "false_person_added": {**_split_by_kept(added, kept, predictions["plain"]),
                                   "fused_called_kept_class": int((added & fused_kept_class).sum())},
            "plain": {"true_person": int((plain_person & is_person).sum()),
                      "false_person": int((plain_person & ~is_person).sum())},
            "keep": {"true_person": int((keep_person & is_person).sum()),
                     "false_person": int((keep_person & ~is_person).sum())},
        })
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="models/msrs/uaafusion.pt", help="the model whose segmenter guards")
    parser.add_argument("--split", default="../shared/datasets/msrs-boxes/train", help="split with ir/, vi/, boxes/")
    parser.add_argument("--fused", default="data/fused-msrs-train/ours", help="the model's fused images of that split")
    parser.add_argument("--classes", default="person", help="guarded class names, comma-separated")
    parser.add_argument("--radius", type=int, default=16, help="the guard's radius (pixels)")
    parser.add_argument("--sigma", type=float, default=16.0, help="the guard's fade (pixels)")
    parser.add_argument("--missed", default="yes", choices=("no", "yes"), help="restore lost objects too")
    parser.add_argument("--keep", default="car", help="class names the keeping guard leaves alone, comma-separated")
    parser.add_argument("--keep-sigma", type=float, default=4.0, help="the kept classes' fade (pixels)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="reports/msrs-base-here/keep-flip.json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    models = load_models_for_inference(args.checkpoint, device)
    classes = class_ids(args.classes)
    plain = make_guard(classes, args.radius, args.sigma, args.missed, GUARD_GAIN)
    keeping = make_guard(classes, args.radius, args.sigma, args.missed, GUARD_GAIN,
                         class_ids(args.keep), args.keep_sigma)
    started = time.perf_counter()
    totals = keep_flip(models.segmenter, Path(args.split), Path(args.fused), plain, keeping, device)
    for key, value in totals.items():
        print(f"{key}: {value}")
    write_record(args.out, "keep_flip.py", params="", split=args.split, fused=args.fused,
                 checkpoint=args.checkpoint, classes=args.classes, keep=args.keep,
                 seconds=round(time.perf_counter() - started, 1), results=totals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
