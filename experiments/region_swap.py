"""Where does the fused image lose people: inside the person or around it?

The segmenter finds fewer people on our fused images than on the infrared image alone
(reports/msrs/README.md, "Box-mask IoU", item 15). This diagnostic swaps regions between a method's
fused images and the infrared images, using the test split's boxes (labels a fusion method never
has: this is not a fusion rule, it asks which pixels the loss is in), and writes one folder of gray
PNG composites per variant, to be scored with ``uaafusion evaluate`` and ``uaafusion compare``:

- ``ir-in-people``: the fused image, with the infrared pixels inside every person box;
- ``fused-in-people``: the infrared image, with the fused pixels inside every person box;
- ``ir-in-objects`` / ``fused-in-objects``: the same with every box (person, bicycle, car).

If the person IoU of ``ir-in-people`` comes back to the infrared image's and ``fused-in-people``
falls to the fused image's, the loss is in the people's own pixels; the other way round, in
their surroundings. Both composites have a seam at the box edges, so a seam that helped the
segmenter would lift both. ::

    python experiments/region_swap.py --fused data/fused-msrs/ours --out data/region-swap
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uaafusion.data.boxes import Box, boxes_to_roi_mask, read_yolo_boxes  # noqa: E402
from uaafusion.data.io import read_image, to_gray_uint8, write_png  # noqa: E402
from uaafusion.data.pairs import find_pairs, index_images  # noqa: E402
from uaafusion.errors import DataError  # noqa: E402
from uaafusion.metrics.evaluate import DEFAULT_BOX_CLASS_NAMES  # noqa: E402

PERSON = DEFAULT_BOX_CLASS_NAMES.index("person")

# variant -> (image outside the region, image inside it, box classes of the region; None = all)
VARIANTS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "ir-in-people": ("fused", "ir", (PERSON,)),
    "fused-in-people": ("ir", "fused", (PERSON,)),
    "ir-in-objects": ("fused", "ir", None),
    "fused-in-objects": ("ir", "fused", None),
}


def region_of(boxes: list[Box], classes: tuple[int, ...] | None, height: int, width: int) -> np.ndarray:
    """``bool (H, W)``: inside any box of ``classes`` (None: any box)."""
    chosen = [box for box in boxes if classes is None or box.box_class in classes]
    return boxes_to_roi_mask(chosen, height, width)


def composite(outside: np.ndarray, inside: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``outside`` with ``inside``'s pixels where ``region`` is True; all ``uint8 (H, W)``."""
    if outside.shape != inside.shape or region.shape != outside.shape:
        raise DataError(f"shapes differ: {outside.shape}, {inside.shape}, region {region.shape}")
    return np.where(region, inside, outside)


def read_test_triples(test_dir: Path, fused: dict[str, Path],
                      ) -> Iterator[tuple[str, dict[str, np.ndarray], list[Box]]]:
    """For every pair of ``test_dir`` (``ir/``, ``vi/``, ``boxes/``), by name: ``(name, gray uint8
    images {"ir", "vi", and each key of fused}, boxes)``; DataError names a missing or mis-sized fused image."""
    indexes = {label: index_images(folder, label) for label, folder in fused.items()}
    for pair in find_pairs(test_dir / "ir", test_dir / "vi"):
        grays = {"ir": to_gray_uint8(read_image(pair.ir_path)), "vi": to_gray_uint8(read_image(pair.vi_path))}
        for label, index in indexes.items():
            if pair.name not in index:
                raise DataError(f"{fused[label]}: no fused image for test pair {pair.name!r} ({label}); "
                                "fuse the whole test split first.")
            grays[label] = to_gray_uint8(read_image(index[pair.name]))
            if grays[label].shape != grays["ir"].shape:
                raise DataError(f"{index[pair.name]}: size {grays[label].shape} differs from {pair.ir_path}'s "
                                f"{grays['ir'].shape}.")
        height, width = grays["ir"].shape
        boxes = read_yolo_boxes(test_dir / "boxes" / f"{pair.name}.txt", height, width, len(DEFAULT_BOX_CLASS_NAMES))
        yield pair.name, grays, boxes


def write_composites(test_dir: Path, fused_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write ``out_dir/<variant>/<name>.png`` for every test pair; returns pixels swapped per variant."""
    swapped = dict.fromkeys(VARIANTS, 0)
    for name, images, boxes in read_test_triples(test_dir, {"fused": fused_dir}):
        height, width = images["ir"].shape
        for variant, (outside, inside, classes) in VARIANTS.items():
            region = region_of(boxes, classes, height, width)
            swapped[variant] += int(region.sum())
            write_png(out_dir / variant / f"{name}.png", composite(images[outside], images[inside], region))
    return swapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", default="../shared/datasets/msrs-boxes/test", help="split with ir/, vi/, boxes/")
    parser.add_argument("--fused", default="data/fused-msrs/ours", help="the method's fused images of that split")
    parser.add_argument("--out", default="data/region-swap", help="folder for the composites (one per variant)")
    args = parser.parse_args(argv)
    swapped = write_composites(Path(args.test), Path(args.fused), Path(args.out))
    for variant, pixels in swapped.items():
        print(f"{variant}: {pixels} pixels swapped -> {Path(args.out) / variant}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
