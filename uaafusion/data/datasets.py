"""Readers of infrared/visible datasets -> ``torch`` datasets of dict samples.

Layouts (``data.layout`` in ``params.yaml``), each under ``root/split/`` (``split=None``: ``root``):

- ``msrs``:  ``ir/``, ``vi/`` and class-index labels in ``Label/`` or ``Segmentation_labels/``;
- ``fmb``:   ``Infrared/``, ``Visible/``, ``Label/``;
- ``boxes``: ``ir/``, ``vi/``, ``boxes/NAME.txt`` (YOLO ``class cx cy w h``). Box class ``k``
  becomes label ``k + 1`` (0 = background; the smaller box wins where boxes overlap), so
  ``num_classes - 1`` box classes are allowed; ``roi`` is 1 inside any box;
- ``pairs``: unlabeled ``ir/``, ``vi/`` in ``root/split/`` when that folder exists, else in ``root``;
  labels are all ``ignore_index``.

Files are paired by name without extension. Every sample is checked when the dataset is created
(see :mod:`uaafusion.data.validation`); a bad one raises :class:`DataError`, or is left out and
listed in ``dataset.skipped`` when ``data.on_bad_input`` is ``skip``.

A sample is a dict::

    name     str
    ir       float32 (1, H, W)   infrared, luma when the file is colour
    vi       float32 (1, H, W)   visible luma Y
    vi_crcb  float32 (2, H, W)   visible Cr, Cb offset by 0.5 (0.5 everywhere for gray input)
    label    int64   (H, W)      class ids, ignore_index for unknown pixels
    roi      float32 (1, H, W)   1 inside boxes, else 0 (0 everywhere for layouts without boxes)
    crop     int64   (4,)        [top, left, height, width] of the sample in the full image

With ``degrade`` (a :class:`~uaafusion.config.DegradeConfig` with kinds; training crops only) each crop
is degraded with ``degrade.probability`` (:mod:`uaafusion.data.sample_degradation`): ``ir``, ``vi`` and
``vi_crcb`` are then the degraded images, and the sample also holds

    ir_clean     float32 (1, H, W)   the infrared crop before degradation (the fusion losses' target)
    vi_clean     float32 (1, H, W)   the visible luma before degradation
    degradation  str                 the kind applied, or "clean"

With ``crop=True`` and ``data.crop_size > 0`` samples are random ``crop_size`` squares; an image
smaller than the crop is padded at the bottom/right (images reflect, ``label`` with
``ignore_index``, ``roi`` with 0) and ``crop`` holds only the part inside the image. Crops depend
only on ``seed``, the epoch set with :meth:`FusionDataset.set_epoch` and the sample index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from uaafusion.config import DataConfig, DegradeConfig
from uaafusion.data.boxes import CLASSES_FILE_NAME, Box, boxes_to_class_mask, boxes_to_roi_mask, read_yolo_boxes
from uaafusion.data.io import array_to_tensor, read_image, read_label_image, split_luma_chroma, to_gray_uint8
from uaafusion.data.pairs import index_images
from uaafusion.data.validation import (
    Problem,
    check_label_file,
    image_size,
    invalid_label_ids,
    label_ids_message,
    resolve_problems,
)
from uaafusion.errors import DataError


LAYOUTS: tuple[str, ...] = ("msrs", "fmb", "boxes", "pairs")
MSRS_LABEL_FOLDERS: tuple[str, ...] = ("Label", "Segmentation_labels")
GRAY_CHROMA = 0.5
"""The ``vi_crcb`` value of every pixel of a gray visible image (Cr, Cb offset by 0.5)."""
BOX_EXTENSION = ".txt"
DEGRADATION_STREAM = 7
"""Extra seed word of a sample's degradation draws (independent of its crop draws)."""

Sample = dict[str, Any]


@dataclass(frozen=True)
class LayoutFolders:
    """The folders of one split of a dataset; ``label``/``boxes`` are ``None`` when unused."""

    split_dir: Path
    ir: Path
    vi: Path
    label: Path | None = None
    boxes: Path | None = None


@dataclass(frozen=True)
class SampleRecord:
    """One checked sample on disk: its files and image size (``boxes`` for the box layout)."""

    name: str
    ir_path: Path
    vi_path: Path
    height: int
    width: int
    label_path: Path | None = None
    box_path: Path | None = None
    boxes: tuple[Box, ...] | None = None


def split_directory(layout: str, root: str | Path, split: str | None) -> Path:
    """The folder holding one split: ``root/split``, or ``root`` itself when ``split`` is ``None``.

    For the ``pairs`` layout ``root`` is used when ``root/split`` does not exist.
    Raises :class:`DataError` when the folder is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found. Set data.root in params.yaml (or run "
                        "'uaafusion prepare --synthetic' to write the synthetic set).")
    if split is None:
        return root
    candidate = root / split
    if candidate.is_dir():
        return candidate
    if layout == "pairs":
        return root
    present = sorted(path.name for path in root.iterdir() if path.is_dir())
    raise DataError(f"{candidate}: split folder not found (folders in {root}: "
                    f"{', '.join(present) or 'none'}). Check data.train_split / data.test_split and data.root.")


def layout_folders(layout: str, split_dir: Path) -> LayoutFolders:
    """The folders a layout expects inside ``split_dir`` (they are checked when the dataset is made)."""
    if layout == "msrs":
        label = next((split_dir / name for name in MSRS_LABEL_FOLDERS if (split_dir / name).is_dir()), None)
        if label is None:
            raise DataError(
                f"{split_dir}: the msrs layout needs class-index labels in "
                f"{' or '.join(str(split_dir / name) for name in MSRS_LABEL_FOLDERS)}; none found. "
                "Add them, or use data.layout: pairs for unlabeled images."
            )
        return LayoutFolders(split_dir, split_dir / "ir", split_dir / "vi", label=label)
    if layout == "fmb":
        return LayoutFolders(split_dir, split_dir / "Infrared", split_dir / "Visible", label=split_dir / "Label")
    if layout == "boxes":
        return LayoutFolders(split_dir, split_dir / "ir", split_dir / "vi", boxes=split_dir / "boxes")
    if layout == "pairs":
        return LayoutFolders(split_dir, split_dir / "ir", split_dir / "vi")
    raise DataError(f"unknown data layout {layout!r}; allowed: {', '.join(LAYOUTS)}.")


def _check_folder(folder: Path, role: str, layout: str) -> None:
    if not folder.is_dir():
        parent = folder.parent
        present = sorted(path.name for path in parent.iterdir() if path.is_dir()) if parent.is_dir() else []
        raise DataError(
            f"{folder}: {role} folder not found (the {layout} layout expects it; folders in {parent}: "
            f"{', '.join(present) or 'none'}). Check data.layout and data.root in params.yaml."
        )


def _index_boxes(folder: Path) -> dict[str, Path]:
    _check_folder(folder, "box label", "boxes")
    index = {path.stem: path for path in sorted(folder.iterdir())
             if path.is_file() and path.suffix.lower() == BOX_EXTENSION and path.name != CLASSES_FILE_NAME}
    if not index:
        raise DataError(f"{folder}: box label folder holds no .txt files (YOLO 'class cx cy w h' per line).")
    return index


def scan_split(layout: str, folders: LayoutFolders, num_classes: int,
               ignore_index: int) -> tuple[list[SampleRecord], list[Problem]]:
    """Pair and check every sample of one split -> (good records, problems), both sorted by name.

    Folder-level faults (missing or empty folders, duplicate names) raise :class:`DataError`.
    """
    _check_folder(folders.ir, "infrared", layout)
    _check_folder(folders.vi, "visible", layout)
    infrared = index_images(folders.ir, "infrared")
    visible = index_images(folders.vi, "visible")
    labels: dict[str, Path] | None = None
    if folders.label is not None:
        _check_folder(folders.label, "label", layout)
        labels = index_images(folders.label, "label")
    box_files = _index_boxes(folders.boxes) if folders.boxes is not None else None

    records: list[SampleRecord] = []
    problems: list[Problem] = []
    for name in sorted(set(infrared) | set(visible)):
        if name not in visible:
            problems.append(Problem(name, f"{infrared[name]}: no visible partner named '{name}' in "
                                          f"{folders.vi}; add it or remove the infrared file."))
            continue
        if name not in infrared:
            problems.append(Problem(name, f"{visible[name]}: no infrared partner named '{name}' in "
                                          f"{folders.ir}; add it or remove the visible file."))
            continue
        try:
            records.append(_check_sample(name, infrared[name], visible[name], labels, folders, box_files,
                                         num_classes, ignore_index))
        except DataError as error:
            problems.append(Problem(name, str(error)))
    if labels is not None:
        for name in sorted(set(labels) - set(infrared) - set(visible)):
            problems.append(Problem(name, f"{labels[name]}: label without image pair in {folders.ir} and "
                                          f"{folders.vi}; add the images or remove the label."))
    if box_files is not None:
        for name in sorted(set(box_files) - set(infrared) - set(visible)):
            problems.append(Problem(name, f"{box_files[name]}: box file without image pair in {folders.ir} and "
                                          f"{folders.vi}; add the images or remove the box file."))
    return records, problems


def _check_sample(name: str, ir_path: Path, vi_path: Path, labels: dict[str, Path] | None,
                  folders: LayoutFolders, box_files: dict[str, Path] | None,
                  num_classes: int, ignore_index: int) -> SampleRecord:
    ir_size = image_size(ir_path)
    vi_size = image_size(vi_path)
    if ir_size != vi_size:
        raise DataError(
            f"{ir_path} is {ir_size[1]}x{ir_size[0]} but {vi_path} is {vi_size[1]}x{vi_size[0]} (WxH); "
            "a pair must be registered images of the same size. Replace or resize one of them."
        )
    height, width = ir_size
    label_path = None
    if labels is not None:
        label_path = labels.get(name)
        if label_path is None:
            raise DataError(f"{folders.label}: no label named '{name}' for {ir_path}; add the label "
                            "or remove the image pair.")
        check_label_file(label_path, height, width, num_classes, ignore_index)
    box_path, boxes = None, None
    if box_files is not None:
        box_path = box_files.get(name)
        if box_path is None:
            raise DataError(f"{folders.boxes}: no box file '{name}{BOX_EXTENSION}' for {ir_path}; add it "
                            "(an empty file means no boxes) or remove the image pair.")
        boxes = tuple(read_yolo_boxes(box_path, height, width, num_classes - 1))
    return SampleRecord(name, ir_path, vi_path, height, width, label_path, box_path, boxes)


def collate_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """Batch samples: tensors stack (``ir (B,1,H,W)``, ``label (B,H,W)``, ``crop (B,4)``), names list.

    Whole images of different sizes cannot share a batch: :class:`DataError` says so.
    """
    first = samples[0]
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            shapes = {tuple(sample[key].shape) for sample in samples}
            if len(shapes) > 1:
                names = ", ".join(str(sample["name"]) for sample in samples)
                raise DataError(
                    f"samples {names} have different sizes ({key}: {sorted(shapes)}) and cannot share a "
                    "batch; use batch size 1 for whole images, or crops (data.crop_size > 0)."
                )
    return default_collate(list(samples))


class FusionDataset(Dataset):
    """Checked infrared/visible samples of one split; see the module docstring for the sample dict."""

    def __init__(self, records: Sequence[SampleRecord], *, layout: str, num_classes: int, ignore_index: int,
                 crop_size: int = 0, seed: int = 0, skipped: Sequence[tuple[str, str]] = (),
                 location: Path | None = None, object_crops: float = 0.0,
                 degrade: DegradeConfig | None = None) -> None:
        if not records:
            raise DataError(f"{location}: no usable samples.")
        self.records: list[SampleRecord] = list(records)
        self.layout = layout
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.crop_size = crop_size
        self.object_crops = object_crops
        self.degrade = degrade if degrade is not None and degrade.kinds else None
        self.seed = seed
        self.epoch = 0
        self.location = location
        self.skipped: list[tuple[str, str]] = list(skipped)
        self._index_by_name = {record.name: index for index, record in enumerate(self.records)}

    # ---- bookkeeping ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        """Sample names (file stems), in index order."""
        return [record.name for record in self.records]

    @property
    def has_boxes(self) -> bool:
        """True for the ``boxes`` layout."""
        return self.layout == "boxes"

    def index_of(self, name: str) -> int:
        """Index of the sample called ``name``."""
        try:
            return self._index_by_name[name]
        except KeyError:
            raise DataError(f"{self.location}: no sample named '{name}'.") from None

    def boxes(self, name: str) -> list[Box]:
        """Pixel boxes of sample ``name`` (empty for layouts without boxes)."""
        record = self.records[self.index_of(name)]
        return list(record.boxes or ())

    def set_epoch(self, epoch: int) -> None:
        """Choose the crops of this epoch (crops depend only on seed, epoch and sample index).

        Call before iterating; with ``persistent_workers`` the workers keep their own copy.
        """
        self.epoch = int(epoch)

    collate = staticmethod(collate_samples)

    # ---- loading -------------------------------------------------------------------------------

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        ir, vi, vi_crcb, label, roi = self._load_full(record)
        height, width = record.height, record.width
        if self.crop_size > 0:
            box = self.crop_box(index)
            size = (self.crop_size, self.crop_size)
            ir, vi, vi_crcb = (crop_padded(image, box, size) for image in (ir, vi, vi_crcb))
            label = crop_padded(label, box, size, fill=self.ignore_index)
            roi = crop_padded(roi, box, size, fill=0.0)
        else:
            box = (0, 0, height, width)
        sample = {
            "name": record.name,
            "ir": torch.from_numpy(np.ascontiguousarray(ir)),
            "vi": torch.from_numpy(np.ascontiguousarray(vi)),
            "vi_crcb": torch.from_numpy(np.ascontiguousarray(vi_crcb)),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "roi": torch.from_numpy(np.ascontiguousarray(roi)),
            "crop": torch.tensor(box, dtype=torch.int64),
        }
        if self.degrade is not None:
            from uaafusion.data.sample_degradation import degrade_sample

            rng = np.random.default_rng([abs(self.seed), abs(self.epoch), index, DEGRADATION_STREAM])
            sample = degrade_sample(sample, self.degrade, rng, has_colour=bool(np.any(vi_crcb != GRAY_CHROMA)))
        return sample

    def crop_box(self, index: int) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of sample ``index``'s crop this epoch, inside the image.

        With ``object_crops > 0`` that share of the crops (of images with boxes) is centred on one
        of the image's boxes, chosen at random, shifted by up to a quarter of the crop each way.
        """
        record = self.records[index]
        if self.crop_size <= 0:
            return (0, 0, record.height, record.width)
        rng = np.random.default_rng([abs(self.seed), abs(self.epoch), index])
        crop_height, crop_width = min(self.crop_size, record.height), min(self.crop_size, record.width)
        boxes = record.boxes or ()
        if self.object_crops > 0 and boxes and rng.random() < self.object_crops:
            box = boxes[int(rng.integers(len(boxes)))]
            centre_row = (box.y0 + box.y1) / 2 + rng.uniform(-0.25, 0.25) * crop_height
            centre_col = (box.x0 + box.x1) / 2 + rng.uniform(-0.25, 0.25) * crop_width
            top = int(np.clip(round(centre_row - crop_height / 2), 0, record.height - crop_height))
            left = int(np.clip(round(centre_col - crop_width / 2), 0, record.width - crop_width))
            return (top, left, crop_height, crop_width)
        top = int(rng.integers(0, record.height - crop_height + 1))
        left = int(rng.integers(0, record.width - crop_width + 1))
        return (top, left, crop_height, crop_width)

    def class_pixel_counts(self) -> np.ndarray:
        """Labelled pixels per class over the whole images of this split: ``(num_classes,)`` int64."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for record in self.records:
            label = self._load_full(record)[3]
            valid = label[label != self.ignore_index]
            counts += np.bincount(valid.ravel(), minlength=self.num_classes)[:self.num_classes]
        return counts

    def _load_full(self, record: SampleRecord) -> tuple[np.ndarray, ...]:
        """Full-size arrays: ir, vi ``(1,H,W)``, vi_crcb ``(2,H,W)``, roi ``(1,H,W)`` float32; label int64 ``(H,W)``."""
        size = (record.height, record.width)
        ir_array = read_image(record.ir_path)
        vi_array = read_image(record.vi_path)
        for path, array in ((record.ir_path, ir_array), (record.vi_path, vi_array)):
            if array.shape[:2] != size:
                raise DataError(f"{path}: image is now {array.shape[1]}x{array.shape[0]} but was "
                                f"{size[1]}x{size[0]} when the dataset was checked; recreate the dataset.")
        ir = array_to_tensor(to_gray_uint8(ir_array)).numpy()
        vi_luma, vi_chroma = split_luma_chroma(vi_array)
        vi = vi_luma.numpy()
        vi_crcb = (vi_chroma.numpy() if vi_chroma is not None
                   else np.full((2, *size), GRAY_CHROMA, dtype=np.float32))
        roi = np.zeros((1, *size), dtype=np.float32)
        if record.label_path is not None:
            label = read_label_image(record.label_path)
            if label.shape != size:
                raise DataError(f"{record.label_path}: label size {label.shape[1]}x{label.shape[0]} does not "
                                f"match its images ({size[1]}x{size[0]}); fix the label.")
            bad_ids = invalid_label_ids(label, self.num_classes, self.ignore_index)
            if bad_ids:
                raise DataError(label_ids_message(record.label_path, bad_ids, self.num_classes, self.ignore_index))
        elif record.boxes is not None:
            boxes = list(record.boxes)
            label = boxes_to_class_mask(boxes, *size)
            roi[0] = boxes_to_roi_mask(boxes, *size)
        else:
            label = np.full(size, self.ignore_index, dtype=np.int64)
        return ir, vi, vi_crcb, label.astype(np.int64, copy=False), roi


def crop_padded(array: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int],
                fill: float | None = None) -> np.ndarray:
    """The ``box = (top, left, height, width)`` part of ``array (..., H, W)``, padded at the bottom and
    right up to ``size = (h, w)`` when the box is smaller (an image smaller than the crop).

    Padding reflects the image (``fill`` None: images, any amount) or is the constant ``fill``
    (labels: ``ignore_index``; ROI maps: 0). Every crop of training data goes through here: the
    dataset's samples, the training stage's stored per-image maps, the experiments' crops.
    """
    top, left, height, width = box
    piece = array[..., top:top + height, left:left + width]
    pad_rows, pad_cols = max(0, size[0] - piece.shape[-2]), max(0, size[1] - piece.shape[-1])
    if pad_rows == 0 and pad_cols == 0:
        return piece
    widths = [(0, 0)] * (piece.ndim - 2) + [(0, pad_rows), (0, pad_cols)]
    if fill is None:
        return np.pad(piece, widths, mode="reflect")
    return np.pad(piece, widths, mode="constant", constant_values=fill)


def sample_chroma(sample: dict[str, Any]) -> torch.Tensor | None:
    """A sample's visible ``vi_crcb (2, H, W)``, or ``None`` when the visible image is gray."""
    chroma = sample["vi_crcb"]
    return None if bool(torch.all(chroma == GRAY_CHROMA)) else chroma


def create_dataset(data_config: DataConfig, split: str | None, crop: bool, seed: int = 0,
                   root_override: str | Path | None = None, degrade: DegradeConfig | None = None) -> FusionDataset:
    """Scan, check and wrap one split of the configured dataset.

    ``split``: a folder under ``data.root`` (``None``: ``data.root`` itself); ``crop``: random
    ``data.crop_size`` crops (training) or whole images (evaluation); ``seed``: crop randomness;
    ``root_override``: use this folder instead of ``data.root``; ``degrade``: degrade the training crops
    (used only with ``crop``).
    Raises :class:`DataError` for bad input (see ``data.on_bad_input``).
    """
    layout = data_config.layout
    if layout not in LAYOUTS:
        raise DataError(f"unknown data layout {layout!r}; allowed: {', '.join(LAYOUTS)}.")
    root = Path(root_override if root_override is not None else data_config.root)
    split_dir = split_directory(layout, root, split)
    folders = layout_folders(layout, split_dir)
    records, problems = scan_split(layout, folders, data_config.num_classes, data_config.ignore_index)
    skipped = resolve_problems(problems, data_config.on_bad_input, f"{split_dir} ({layout} layout)")
    if not records:
        reasons = "\n".join(f"  - {reason}" for _, reason in skipped[:10])
        raise DataError(f"{split_dir}: no usable samples left after skipping {len(skipped)} bad one(s):\n"
                        f"{reasons}\nFix these files.")
    return FusionDataset(records, layout=layout, num_classes=data_config.num_classes,
                         ignore_index=data_config.ignore_index, crop_size=data_config.crop_size if crop else 0,
                         seed=seed, skipped=skipped, location=split_dir,
                         object_crops=data_config.object_crops if crop else 0.0,
                         degrade=degrade if crop else None)
