"""Task metrics: segmentation IoU accumulated over a set, and SSIM inside regions of interest.

- :class:`ConfusionMatrix` accumulates pixel counts ``matrix[target, prediction]`` over every
  image of a set, so mIoU, per-class IoU and pixel accuracy are *set-level* values (pixels of
  all images pooled), not means of per-image values.
  ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; a class whose union ``TP + FP + FN`` is 0 (it never
  appears in the targets nor in the predictions) has IoU ``nan`` and is left out of the mIoU,
  which is the mean of the IoUs of the classes that appear. Pixel accuracy = correct / counted
  pixels. Target pixels equal to ``ignore_index`` are not counted at all.
- Box-mask IoU: with YOLO boxes as the only labels, the target is the box-derived class mask
  (:func:`uaafusion.data.boxes.boxes_to_class_mask`: 0 background, box class ``k`` -> ``k + 1``)
  and the same :class:`ConfusionMatrix` scores the predicted class mask against it. Boxes are
  coarse, so this IoU is a weak, relative measure.
- :func:`roi_ssim`: SSIM of the fused image against a source averaged over the pixels of a
  region-of-interest mask (e.g. the union of boxes).
"""

from __future__ import annotations

import numpy as np
import torch

from uaafusion.metrics.fusion import SSIM_WINDOW_SIZE, ssim_map

ArrayLike = np.ndarray | torch.Tensor


def _as_integer_array(values: ArrayLike) -> np.ndarray:
    """numpy or torch integer array -> int64 numpy array (moved to the CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.equal(np.mod(array, 1), 0)):
            return array.astype(np.int64)
        raise TypeError(f"expected an integer class-index array, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


class ConfusionMatrix:
    """Pixel confusion matrix of a segmentation, accumulated over many images.

    ``matrix[t, p]`` counts pixels of target class ``t`` predicted as ``p`` (``int64``,
    ``num_classes x num_classes``). Pixels whose target is ``ignore_index`` are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget every counted pixel."""
        self.matrix[:] = 0

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add the pixels of one image or a batch: ``pred`` and ``target`` class indices of equal shape.

        ``pred`` must lie in ``[0, num_classes)``; ``target`` too, except ``ignore_index``
        (skipped). Anything else raises ``ValueError`` naming the offending values.
        """
        predicted = _as_integer_array(pred)
        expected = _as_integer_array(target)
        if predicted.shape != expected.shape:
            raise ValueError(f"prediction and target shapes differ: {predicted.shape} vs {expected.shape}")
        counted = expected != self.ignore_index
        predicted = predicted[counted]
        expected = expected[counted]
        for role, values in (("prediction", predicted), ("target", expected)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                bad = np.unique(values[(values < 0) | (values >= self.num_classes)])
                raise ValueError(
                    f"{role} holds class ids {bad[:10].tolist()} outside 0..{self.num_classes - 1} "
                    f"(ignore index {self.ignore_index})"
                )
        self.matrix += np.bincount(
            expected * self.num_classes + predicted, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add the counts of another matrix with the same number of classes."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes}-class counts")
        self.matrix += other.matrix

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def per_class_iou(self) -> np.ndarray:
        """IoU of each class, float64 ``(num_classes,)``; ``nan`` for a class absent from targets and predictions."""
        true_positive = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - np.diag(self.matrix)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that appear in the targets or the predictions (``nan`` when none)."""
        values = self.per_class_iou()
        present = ~np.isnan(values)
        return float(values[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correctly classified pixels / counted pixels (``nan`` before any pixel was counted)."""
        total = self.total
        return float(np.trace(self.matrix)) / total if total else float("nan")


def roi_ssim(fused: np.ndarray, source: np.ndarray, roi_mask: np.ndarray) -> float:
    """SSIM of ``fused`` against ``source`` averaged over the pixels of ``roi_mask`` (bool ``(H, W)``).

    Uses the same SSIM map as :func:`uaafusion.metrics.fusion.structural_similarity` (11x11
    Gaussian windows wholly inside the image): each ROI pixel contributes the SSIM of the
    window centred on it, and ROI pixels within 5 pixels of the image border (no full window)
    are left out. So ``roi_ssim(F, S, all-True) == SSIM(F, S)``. Returns ``nan`` when no ROI
    pixel has a full window (empty mask, or a region only along the border).
    """
    return roi_mean_of_ssim_map(ssim_map(fused, source), roi_mask)


def roi_mean_of_ssim_map(values: np.ndarray, roi_mask: np.ndarray) -> float:
    """Mean of a 'valid' SSIM map (:func:`uaafusion.metrics.fusion.ssim_map`) over the ROI pixels.

    ``values`` is ``(H - 10, W - 10)``, ``roi_mask`` bool ``(H, W)``; map element ``[i, j]`` is
    the window centred on pixel ``[i + 5, j + 5]``. ``nan`` when no ROI pixel is a window centre.
    """
    mask = np.asarray(roi_mask, dtype=bool)
    half = SSIM_WINDOW_SIZE // 2
    height, width = mask.shape
    expected_shape = (max(0, height - 2 * half), max(0, width - 2 * half))
    if values.shape != expected_shape:
        raise ValueError(f"SSIM map {values.shape} does not fit a ROI mask of {mask.shape} (expected {expected_shape})")
    inner_mask = mask[half:half + expected_shape[0], half:half + expected_shape[1]]
    if values.size == 0 or not inner_mask.any():
        return float("nan")
    return float(values[inner_mask].mean())
