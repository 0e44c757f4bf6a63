"""Scoring a folder of fused images against their infrared/visible sources (and labels, if any).

:func:`evaluate_folders` pairs ``ir/NAME.*``, ``vi/NAME.*`` and ``fused/NAME.*`` by file stem
(extensions may differ), checks everything first (missing files, size mismatches, labels out of
range, malformed boxes: one :class:`~uaafusion.errors.DataError` lists every problem), then
computes per image

- the fusion metrics of :func:`uaafusion.metrics.fusion.fusion_metrics` on the gray (rounded
  BT.601 luma) images; with ``reference_ir_dir``/``reference_vi_dir`` (the clean sources of
  degraded inputs: the protocol of degraded-fusion papers) F is scored against those references,
  while the segmenter still sees the inputs the fusion saw;
- with ``boxes_dir``: ``ROI_SSIM_ir`` / ``ROI_SSIM_vi`` = :func:`~uaafusion.metrics.segmentation.roi_ssim`
  of F against A / B inside the union of the boxes, and ``ROI_SSIM`` = their sum (like ``SSIM``);
  ``None`` for an image without boxes;
- with a ``segmenter`` and ``labels_dir``: ``mIoU`` of that image; with a segmenter and
  ``boxes_dir``: ``box_mIoU`` of that image against the box-derived class mask.

``mean`` holds the mean over images of every per-image metric (images where it is ``None``
left out), except the segmentation metrics, which are *set-level*: mIoU, pixel accuracy and
per-class IoU come from one confusion matrix accumulated over all images (see
:mod:`uaafusion.metrics.segmentation`), for the segmenter applied to the fused image (``mIoU``,
``pixel_accuracy``, ``IoU/<class>``) and, for comparison, to each source (``mIoU_ir``,
``pixel_accuracy_ir``, ``IoU_ir/<class>``, ``mIoU_vi``, ...). Against box masks the same keys
carry a ``box_`` prefix (``box_mIoU``, ``box_pixel_accuracy``, ``box_IoU/<class>``,
``box_mIoU_ir``, ...). Undefined values (``nan``) are reported as ``None`` so the result is
plain JSON. ``confusion`` keeps each image's confusion matrix under the set-level key it adds
to (``{"box_mIoU_ir": {name: [[count, ...], ...]}}``), so that a comparison can resample the
images (:mod:`uaafusion.metrics.comparison`).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uaafusion.data.boxes import Box, boxes_to_class_mask, boxes_to_roi_mask, read_yolo_boxes
from uaafusion.data.io import read_image, read_label_image, to_gray_uint8
from uaafusion.data.pairs import find_pairs, index_images
from uaafusion.data.validation import image_size
from uaafusion.errors import ConfigError, DataError
from uaafusion.metrics.classes import DEFAULT_BOX_CLASS_NAMES, resolve_classes
from uaafusion.metrics.fusion import METRIC_NAMES, fusion_metrics_and_ssim_maps
from uaafusion.metrics.segmentation import ConfusionMatrix, roi_mean_of_ssim_map

LOGGER = logging.getLogger(__name__)

KEEP_DECODED_BYTES = 512 * 2**20
"""Gray images decoded while checking the folders are kept (up to this many bytes) for scoring."""

# Segmenter inputs, in the order of the batch it sees: key suffix of the result -> role.
_SEGMENTER_INPUTS: tuple[tuple[str, str], ...] = (("", "fused"), ("_ir", "ir"), ("_vi", "vi"))


@dataclass
class _Sample:
    """Paths of one image triple (and its labels), found by name."""

    name: str
    ir_path: Path
    vi_path: Path
    fused_path: Path
    label_path: Path | None = None
    boxes_path: Path | None = None
    boxes: list[Box] = field(default_factory=list)
    gray_images: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (ir, vi, fused) kept from the check
    reference_paths: tuple[Path | None, Path | None] = (None, None)  # clean (ir, vi) the metrics compare with

    def reference_images(self, ir_gray: np.ndarray, vi_gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gray ``uint8`` (ir, vi) the fusion metrics compare F with: the references, else the inputs."""
        ir_reference, vi_reference = self.reference_paths
        return (to_gray_uint8(read_image(ir_reference)) if ir_reference is not None else ir_gray,
                to_gray_uint8(read_image(vi_reference)) if vi_reference is not None else vi_gray)

    def read_gray_images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gray ``uint8`` (ir, vi, fused): the ones kept from the check pass (then released), else read."""
        if self.gray_images is not None:
            images, self.gray_images = self.gray_images, None
            return images
        return (
            to_gray_uint8(read_image(self.ir_path)),
            to_gray_uint8(read_image(self.vi_path)),
            to_gray_uint8(read_image(self.fused_path)),
        )


def _preview(items: Sequence[str], limit: int = 20) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")


def _size_text(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _collect_samples(
    ir_dir: str | Path,
    vi_dir: str | Path,
    fused_dir: str | Path,
    labels_dir: str | Path | None,
    boxes_dir: str | Path | None,
    num_classes: int | None,
    ignore_index: int,
    select: str | None = None,
    references: tuple[str | Path | None, str | Path | None] = (None, None),
) -> list[_Sample]:
    """Find every triple (of the pairs whose name matches ``select``, a shell-style pattern) and
    check it, with its clean ``references`` (ir, vi folders) when given; one :class:`DataError`
    lists all problems found."""
    pairs = find_pairs(ir_dir, vi_dir)
    if select is not None:
        selected = [pair for pair in pairs if fnmatch.fnmatchcase(pair.name, select)]
        if not selected:
            raise DataError(
                f"no pair of {ir_dir} and {vi_dir} has a name matching --select {select!r} "
                f"(names look like {_preview([pair.name for pair in pairs], 3)}); "
                "give a shell-style pattern of the names without extension, e.g. '*N'."
            )
        pairs = selected
    fused_index = index_images(fused_dir, "fused")
    label_index = index_images(labels_dir, "label") if labels_dir is not None else {}
    problems: list[str] = []
    hints: list[str] = []

    missing_fused = [pair.name for pair in pairs if pair.name not in fused_index]
    if missing_fused:
        problems.append(f"no fused image in {fused_dir} for {len(missing_fused)} pair(s): {_preview(missing_fused)}")
        hints.append(
            "fuse the missing pairs (file name = the pair's name, any image extension) "
            "or point --fused at the complete folder"
        )
    missing_labels = [pair.name for pair in pairs if labels_dir is not None and pair.name not in label_index]
    if missing_labels:
        problems.append(f"no label image in {labels_dir} for: {_preview(missing_labels)}")
        hints.append("add the missing class-index label PNGs")
    missing_boxes = {
        pair.name for pair in pairs if boxes_dir is not None and not (Path(boxes_dir) / f"{pair.name}.txt").is_file()
    }
    if missing_boxes:
        problems.append(f"no box file {boxes_dir}/NAME.txt for: {_preview(sorted(missing_boxes))}")
        hints.append("add the box files (an empty file means no boxes)")
    extra_fused = sorted(
        name for name in set(fused_index) - {pair.name for pair in pairs}
        if select is None or fnmatch.fnmatchcase(name, select)
    )
    if extra_fused:
        LOGGER.info(
            "%d fused image(s) without a source pair are ignored: %s", len(extra_fused), _preview(extra_fused, 5)
        )

    reference_indexes = [index_images(folder, f"reference {role}") if folder is not None else None
                         for folder, role in zip(references, ("infrared", "visible"))]
    for folder, index, role, flag in zip(references, reference_indexes, ("infrared", "visible"), ("ir", "vi")):
        missing = [pair.name for pair in pairs if index is not None and pair.name not in index]
        if missing:
            problems.append(f"no reference {role} image in {folder} for {len(missing)} pair(s): {_preview(missing)}")
            hints.append(f"point --reference-{flag} at the clean sources of the degraded pairs (same names)")

    size_problems: list[str] = []
    label_problems: list[str] = []
    unreadable: list[str] = []
    kept_bytes = 0
    samples: list[_Sample] = []
    for pair in pairs:
        if pair.name not in fused_index:
            continue
        sample = _Sample(pair.name, pair.ir_path, pair.vi_path, fused_index[pair.name])
        try:
            ir_image, vi_image, fused_image = (
                read_image(pair.ir_path), read_image(pair.vi_path), read_image(sample.fused_path)
            )
        except DataError as error:
            unreadable.append(str(error))
            continue
        ir_shape, vi_shape, fused_shape = ir_image.shape[:2], vi_image.shape[:2], fused_image.shape[:2]
        if kept_bytes + 3 * ir_image[..., 0].size <= KEEP_DECODED_BYTES:  # spare the second decode
            sample.gray_images = (to_gray_uint8(ir_image), to_gray_uint8(vi_image), to_gray_uint8(fused_image))
            kept_bytes += sum(image.nbytes for image in sample.gray_images)
        if ir_shape != vi_shape:
            size_problems.append(f"{pair.name}: infrared {_size_text(ir_shape)} vs visible {_size_text(vi_shape)} "
                                 f"({pair.ir_path}, {pair.vi_path})")
        if fused_shape != ir_shape:  # (of the infrared's size but not the visible's: said just above)
            size_problems.append(
                f"{pair.name}: fused {_size_text(fused_shape)} vs infrared {_size_text(ir_shape)} ({sample.fused_path})"
            )
        sample.reference_paths = tuple(index.get(pair.name) if index is not None else None
                                       for index in reference_indexes)
        for reference, role in zip(sample.reference_paths, ("infrared", "visible")):
            try:
                reference_shape = image_size(reference) if reference is not None else ir_shape
            except DataError as error:
                unreadable.append(str(error))
                continue
            if reference_shape != ir_shape:
                size_problems.append(f"{pair.name}: reference {role} {_size_text(reference_shape)} vs "
                                     f"infrared {_size_text(ir_shape)} ({reference})")
        height, width = ir_shape
        if pair.name in label_index:
            sample.label_path = label_index[pair.name]
            label = read_label_image(sample.label_path)
            if label.shape != ir_shape:
                size_problems.append(
                    f"{pair.name}: label {_size_text(label.shape)} vs infrared {_size_text(ir_shape)} "
                    f"({sample.label_path})"
                )
            if num_classes is not None:
                bad_ids = np.unique(label[(label != ignore_index) & ((label < 0) | (label >= num_classes))])
                if bad_ids.size:
                    label_problems.append(
                        f"{sample.label_path}: class ids {bad_ids[:10].tolist()} outside 0..{num_classes - 1} "
                        f"(ignore index {ignore_index})"
                    )
        if boxes_dir is not None and pair.name not in missing_boxes:
            sample.boxes_path = Path(boxes_dir) / f"{pair.name}.txt"
            num_box_classes = (num_classes - 1) if num_classes is not None else len(DEFAULT_BOX_CLASS_NAMES)
            try:
                sample.boxes = read_yolo_boxes(sample.boxes_path, height, width, num_box_classes)
            except DataError as error:
                label_problems.append(str(error))
        samples.append(sample)

    if unreadable:
        problems.append(f"{len(unreadable)} unreadable image(s): {_preview(unreadable)}")
        hints.append("replace or remove the unreadable files")
    if size_problems:
        problems.append(f"size mismatch in {len(size_problems)} case(s) (width x height): {_preview(size_problems)}")
        hints.append(
            "fused images must have the size of their sources (and sources of each other); "
            "re-fuse or re-align these pairs"
        )
    if label_problems:
        problems.append(f"bad labels in {len(label_problems)} file(s): {_preview(label_problems)}")
        hints.append("fix the labels, or pass --num-classes (and class names) matching them")
    if problems:
        raise DataError(
            "cannot evaluate: " + " | ".join(problem.rstrip(".") for problem in problems) + ". What to do: "
            + "; ".join(hints) + "."
        )
    return samples


def _json_number(value: float) -> float | None:
    """``nan``/``inf`` -> ``None`` (JSON has no NaN); anything else -> ``float``."""
    value = float(value)
    return value if math.isfinite(value) else None


def _segmentation_summary(
    matrix: ConfusionMatrix, class_names: list[str], prefix: str, suffix: str
) -> dict[str, float | None]:
    """Set-level keys ``{prefix}mIoU{suffix}``, ``{prefix}pixel_accuracy{suffix}``, ``{prefix}IoU{suffix}/<class>``."""
    summary: dict[str, float | None] = {
        f"{prefix}mIoU{suffix}": _json_number(matrix.miou()),
        f"{prefix}pixel_accuracy{suffix}": _json_number(matrix.pixel_accuracy()),
    }
    for name, value in zip(class_names, matrix.per_class_iou(), strict=True):
        summary[f"{prefix}IoU{suffix}/{name}"] = _json_number(value)
    return summary


def _predict_classes(
    segmenter: torch.nn.Module, images: list[np.ndarray], device: torch.device, num_classes: int
) -> np.ndarray:
    """Class indices ``int64 (N, H, W)`` that ``segmenter`` predicts for equal-size gray ``uint8`` images."""
    batch = torch.from_numpy(np.stack(images)).to(device=device, dtype=torch.float32).div_(255.0).unsqueeze(1)
    with torch.inference_mode():
        logits = segmenter(batch)
    if logits.ndim != 4 or logits.shape[1] != num_classes or tuple(logits.shape[-2:]) != tuple(batch.shape[-2:]):
        raise ConfigError(
            f"the segmenter returned logits of shape {tuple(logits.shape)} for input {tuple(batch.shape)}; "
            f"expected ({batch.shape[0]}, {num_classes}, {batch.shape[-2]}, {batch.shape[-1]})."
        )
    return logits.argmax(dim=1).cpu().numpy().astype(np.int64)


def evaluate_folders(
    ir_dir: str | Path,
    vi_dir: str | Path,
    fused_dir: str | Path,
    labels_dir: str | Path | None = None,
    boxes_dir: str | Path | None = None,
    segmenter: torch.nn.Module | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    device: str | torch.device = "cpu",
    progress: bool = True,
    select: str | None = None,
    reference_ir_dir: str | Path | None = None,
    reference_vi_dir: str | Path | None = None,
) -> dict:
    """Score the fused images of ``fused_dir`` against ``ir_dir``/``vi_dir`` (and labels, if given).

    Args:
        ir_dir, vi_dir, fused_dir: folders of images paired by file stem (extensions may differ).
        labels_dir: class-index label PNGs ``NAME.png`` (ids ``0..num_classes-1``, or ``ignore_index``).
        boxes_dir: YOLO box files ``NAME.txt``; gives ROI-SSIM, and box-mask IoU with a segmenter.
        segmenter: ``nn.Module`` mapping ``(B, 1, H, W)`` float in ``[0, 1]`` to logits
            ``(B, C, H, W)``; scored on the fused gray image and on each source. It is moved to
            ``device`` and run in eval mode (its training flag is restored afterwards).
        num_classes: classes of the labels/segmenter; default: the segmenter's output channels,
            or, with boxes, 1 + the number of box classes (``classes.txt`` in the boxes folder,
            its parent or grandparent; else person, bicycle, car).
        class_names: names for the ``IoU/<class>`` keys (background first); default from
            ``classes.txt`` for boxes, else ``class0``, ``class1``, ...
        ignore_index: label value of pixels that are not scored.
        device: where the segmenter runs (``cpu``, ``cuda``, ``auto``).
        progress: show a tqdm progress bar.
        select: score only the pairs whose name (file stem) matches this shell-style pattern,
            e.g. ``"*N"`` for MSRS's night images; None: every pair.
        reference_ir_dir, reference_vi_dir: clean sources (same names) the fusion metrics compare
            F with instead of ``ir_dir``/``vi_dir`` (degraded inputs); the segmenter's source
            scores stay on the inputs.

    Returns:
        ``{"per_image": {name: {metric: value}}, "mean": {metric: value}, "count": n}`` (plus
        ``"roi_count"``, the number of images with boxes, when ``boxes_dir`` is given, and
        ``"confusion"``, the per-image confusion matrices, when a segmenter was scored); values
        are floats or ``None`` (undefined). See the module docstring for the keys.

    Raises:
        DataError: missing/unpaired files, size mismatches, labels out of range, bad boxes
            (all problems listed at once).
        ConfigError: class names/number of classes inconsistent with each other or the segmenter.
    """
    from uaafusion.device import resolve_device

    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    was_training = segmenter.training if segmenter is not None else False
    if segmenter is not None:
        segmenter.to(torch_device).eval()
    try:
        num_classes, names = resolve_classes(boxes_dir, segmenter, num_classes, class_names, torch_device)
        samples = _collect_samples(ir_dir, vi_dir, fused_dir, labels_dir, boxes_dir, num_classes, ignore_index,
                                   select, (reference_ir_dir, reference_vi_dir))
        if labels_dir is not None and segmenter is None:
            LOGGER.warning("labels given without a segmenter: only the fusion metrics are computed.")
        if segmenter is not None and labels_dir is None and boxes_dir is None:
            LOGGER.warning("segmenter given without labels or boxes: no segmentation metric is computed.")
        return _score_samples(
            samples, segmenter, num_classes, names, ignore_index, torch_device, progress, boxes_dir is not None
        )
    finally:
        if segmenter is not None:
            segmenter.train(was_training)


def _score_samples(
    samples: list[_Sample],
    segmenter: torch.nn.Module | None,
    num_classes: int | None,
    class_names: list[str] | None,
    ignore_index: int,
    device: torch.device,
    progress: bool,
    with_boxes: bool,
) -> dict:
    """The per-image loop of :func:`evaluate_folders` over checked samples."""
    score_labels = segmenter is not None and any(sample.label_path is not None for sample in samples)
    score_boxes = segmenter is not None and with_boxes
    per_image: dict[str, dict[str, float | None]] = {}
    # Each image's confusion matrix under its set-level key ("box_mIoU_ir"); the set-level ones are their sums.
    image_matrices: dict[str, dict[str, ConfusionMatrix]] = {}
    roi_count = 0
    for sample in tqdm(samples, desc="evaluate", unit="image", disable=not progress or len(samples) < 2):
        ir_gray, vi_gray, fused_gray = sample.read_gray_images()
        metrics, (ssim_map_ir, ssim_map_vi) = fusion_metrics_and_ssim_maps(
            fused_gray, *sample.reference_images(ir_gray, vi_gray))
        values: dict[str, float | None] = {key: _json_number(value) for key, value in metrics.items()}
        height, width = fused_gray.shape
        if with_boxes:
            roi = boxes_to_roi_mask(sample.boxes, height, width)
            roi_ir = roi_mean_of_ssim_map(ssim_map_ir, roi)
            roi_vi = roi_mean_of_ssim_map(ssim_map_vi, roi)
            values["ROI_SSIM"] = _json_number(roi_ir + roi_vi)
            values["ROI_SSIM_ir"] = _json_number(roi_ir)
            values["ROI_SSIM_vi"] = _json_number(roi_vi)
            roi_count += values["ROI_SSIM"] is not None
        if score_labels or score_boxes:
            assert segmenter is not None and num_classes is not None
            predictions = _predict_classes(segmenter, [fused_gray, ir_gray, vi_gray], device, num_classes)
            targets = []
            if score_labels and sample.label_path is not None:
                targets.append(("", read_label_image(sample.label_path)))
            if score_boxes:
                targets.append(("box_", boxes_to_class_mask(sample.boxes, height, width)))
            for prefix, target in targets:
                for index, (suffix, _) in enumerate(_SEGMENTER_INPUTS):
                    image_matrix = ConfusionMatrix(num_classes, ignore_index)
                    image_matrix.update(predictions[index], target)
                    image_matrices.setdefault(f"{prefix}mIoU{suffix}", {})[sample.name] = image_matrix
                    if not suffix:
                        values[f"{prefix}mIoU"] = _json_number(image_matrix.miou())
        per_image[sample.name] = values

    mean: dict[str, float | None] = {}
    keys = list(METRIC_NAMES) + [key for key in ("ROI_SSIM", "ROI_SSIM_ir", "ROI_SSIM_vi") if with_boxes]
    for key in keys:
        present = [value[key] for value in per_image.values() if value.get(key) is not None]
        mean[key] = float(np.mean(present)) if present else None
    for prefix, scored in (("", score_labels), ("box_", score_boxes)):
        if not scored:
            continue
        assert num_classes is not None and class_names is not None
        for suffix, _ in _SEGMENTER_INPUTS:
            set_matrix = ConfusionMatrix(num_classes, ignore_index)
            for image_matrix in image_matrices.get(f"{prefix}mIoU{suffix}", {}).values():
                set_matrix.merge(image_matrix)
            mean.update(_segmentation_summary(set_matrix, class_names, prefix, suffix))

    result: dict = {"per_image": per_image, "mean": mean, "count": len(per_image)}
    if image_matrices:
        result["confusion"] = {key: {name: matrix.matrix.tolist() for name, matrix in matrices.items()}
                               for key, matrices in image_matrices.items()}
    if with_boxes:
        result["roi_count"] = roi_count
    return result


def format_table(results: dict) -> str:
    """A plain-text table of ``results["mean"]`` (one metric per line) for the terminal."""
    mean: dict[str, float | None] = results.get("mean", {})
    count = results.get("count", len(results.get("per_image", {})))
    width = max([len("metric")] + [len(key) for key in mean])
    lines = [f"{'metric':<{width}}  {'mean':>10}", f"{'-' * width}  {'-' * 10}"]
    for key, value in mean.items():
        text = "n/a" if value is None else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {text:>10}")
    footer = f"{count} image(s)"
    if "roi_count" in results:
        footer += f", {results['roi_count']} with boxes (ROI_SSIM averaged over those)"
    lines.append(footer)
    return "\n".join(lines)
