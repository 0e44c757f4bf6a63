"""Attribution analysis: how much each source image matters to each semantic region (docs/method.md §1).

For a source ``X`` (infrared or visible) and a class ``c`` present in the one-hot mask ``M``
(region ``R_c``), the score ``s_c(x)`` is the mean over ``R_c`` of logit ``c`` of ``S(x)``;
integrated gradients (Captum, zero baseline, ``steps`` points) of ``s_c`` give ``IG_c(X)``; the
region score is ``a_c(X) = relu(mean over R_c of IG_c(X))``. The weight maps are
``w_I = (A_I + eps) / (A_I + A_V + 2 eps)``, ``w_V = 1 - w_I`` with ``A_X(p) = a_{c(p)}(X)``.

Unlike the published research code, everything here is per image (no region mean over the whole
batch), for any number of classes, and batched: every (image, present class) pair becomes one
copy of the image, and Captum runs once over all copies and all integration points with a
forward function that returns one score per copy (the copy's region mask and class index go in
as ``additional_forward_args``). Classes absent from an image cost nothing.

The segmenter runs in eval mode with ``requires_grad`` off for its parameters during attribution
(nothing accumulates in ``.grad``), as a copy with its BatchNorms folded into the convolutions
(:func:`frozen_segmenter`); the segmenter passed in is not touched. All functions
also work when the caller has gradients disabled (``torch.no_grad()``, ``torch.inference_mode()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from uaafusion.errors import ConfigError, DataError
from uaafusion.folding import folded_for_inference

ATTRIBUTION_METHODS: tuple[str, ...] = (
    "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre",
)
DEFAULT_EPS = 1e-8
# Segmenter inputs per pass at 256x256 (fewer for larger images, :func:`inputs_per_pass`). The
# default is bounded: an unbounded batch (None) is slower than a per-class loop on 2 CPU cores
# and its memory grows with steps x classes x images (reports/benchmarks.md).
DEFAULT_INTERNAL_BATCH_SIZE = 32

# How the integral is evaluated; all give the same numbers (tested against each other and a
# plain autograd loop). "reverse": one forward pass per integration point, kept for one
# backward pass per class; "forward": forward-mode directional derivatives, every class of a
# point in one vmapped tangent pass; "captum": Captum's IntegratedGradients over (image, class)
# copies, one forward and one backward pass per copy and step.
ATTRIBUTION_ENGINES: tuple[str, ...] = ("reverse", "forward", "captum")
DEFAULT_ENGINE = "reverse"  # the fastest on 2 CPU cores (reports/benchmarks.md)


# --------------------------------------------------------------------------------------------
# Helpers shared with the fusion model
# --------------------------------------------------------------------------------------------
def frozen_segmenter(segmenter: nn.Module) -> nn.Module:
    """The segmenter as attribution and attention use it: eval mode, no parameter gradients.

    Returns a copy with the BatchNorms folded into their convolutions
    (:func:`~uaafusion.folding.folded_for_inference`: the same function, one elementwise
    pass fewer per BatchNorm; rebuilt only when the segmenter's weights change). ``segmenter``
    itself (its mode, ``requires_grad`` flags and ``.grad``) is not touched.
    """
    return folded_for_inference(segmenter)


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on, even inside ``torch.no_grad()`` or ``torch.inference_mode()``.

    Tensors created inside ``inference_mode`` must be cloned (:func:`autograd_usable`) before
    they enter a graph.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_usable(tensor: torch.Tensor) -> torch.Tensor:
    """A detached tensor that autograd may use (a clone when ``tensor`` is an inference tensor)."""
    tensor = tensor.detach()
    return tensor.clone() if tensor.is_inference() else tensor


def labels_to_one_hot(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Integer labels ``(B, H, W)`` -> float one-hot mask ``(B, C, H, W)``; ignored pixels are all 0.

    Raises :class:`DataError` for a label outside ``0..C-1`` that is not ``ignore_index``.
    """
    if labels.dim() != 3:
        raise DataError(f"labels must be (B, H, W) integers, got shape {tuple(labels.shape)}")
    valid = labels != ignore_index
    if bool(((labels < 0) | (labels >= num_classes))[valid].any()):
        bad = sorted(set(labels[valid & ((labels < 0) | (labels >= num_classes))].unique().tolist()))
        raise DataError(
            f"label ids {bad[:10]} are outside 0..{num_classes - 1} and not the ignore index "
            f"{ignore_index}; check data.num_classes or the label images."
        )
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    one_hot = torch.nn.functional.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return one_hot * valid.unsqueeze(1).float()


def mask_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """One-hot of the arg-max class: logits ``(B, C, H, W)`` -> float mask ``(B, C, H, W)``."""
    classes = logits.argmax(dim=1)
    return torch.nn.functional.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)


def check_method(method: str, steps: int) -> None:
    if method not in ATTRIBUTION_METHODS:
        raise ConfigError(f"attribution.method = {method!r} is not allowed; allowed: {', '.join(ATTRIBUTION_METHODS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"attribution.steps = {steps!r}: expected an integer >= 1.")
    if method.startswith("riemann") and steps < 2:
        raise ConfigError(
            f"attribution.steps = {steps}: Captum's Riemann rules ({method}) need at least 2 steps; "
            "use steps >= 2 or method gausslegendre."
        )


def _check_image_and_mask(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.dim() != 4:
        raise DataError(f"image must be (B, 1, H, W), got shape {tuple(image.shape)}")
    if mask.dim() != 4 or mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
        raise DataError(
            f"mask must be one-hot (B, C, H, W) matching the image {tuple(image.shape)}, got {tuple(mask.shape)}"
        )


# --------------------------------------------------------------------------------------------
# Region attribution and modality weights
# --------------------------------------------------------------------------------------------
class _RegionScore:
    """Captum forward function: one score per copy, ``s_c(x)`` = mean of logit ``c`` over ``R_c``."""

    def __init__(self, segmenter: nn.Module) -> None:
        self.segmenter = segmenter

    def __call__(self, images: torch.Tensor, region_masks: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``images (N, 1, H, W)``, ``region_masks (N, 1, H, W)``, ``classes (N,)`` -> scores ``(N,)``."""
        logits = self.segmenter(images)
        index = classes.view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[-2:])
        selected = logits.gather(1, index)
        return (selected * region_masks).sum(dim=(1, 2, 3)) / region_masks.sum(dim=(1, 2, 3))


REFERENCE_PIXELS = 256 * 256


def inputs_per_pass(internal_batch_size: int | None, height: int, width: int) -> int | None:
    """Segmenter inputs of ``height x width`` per pass for the memory knob ``internal_batch_size``.

    Up to 256x256 pixels the knob is the number of inputs; larger images get proportionally fewer
    per pass (at least one), so that the memory of a pass stays bounded at any image size (at
    640x480, 32 becomes 6; at 1280x1024, 1). ``None``: no bound.
    """
    if internal_batch_size is None:
        return None
    pixels = max(1, height * width)
    if pixels <= REFERENCE_PIXELS:
        return internal_batch_size
    return max(1, internal_batch_size * REFERENCE_PIXELS // pixels)


def region_attribution(
    segmenter: nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    method: str = "riemann_right",
    internal_batch_size: int | None = DEFAULT_INTERNAL_BATCH_SIZE,
    engine: str = DEFAULT_ENGINE,
) -> torch.Tensor:
    """Region scores ``a_c(X)`` per image and class: ``(B, C)``, 0 for classes absent from an image.

    image: ``(B, 1, H, W)`` (the source ``X``); mask: one-hot ``(B, C, H, W)`` (values > 0.5 are
    in the region). ``steps`` integration points of Captum's ``method`` (``riemann_right``:
    points ``x*k/steps``, ``k = 1..steps``). One Captum call covers all (image, present class)
    copies; ``internal_batch_size`` bounds the segmenter inputs per pass (fewer for
    images larger than 256x256, :func:`inputs_per_pass`; copies are split into groups when there are more than that). The
    grouping changes memory and speed, never the numbers. The result carries no autograd graph.

    ``engine="reverse"`` (:func:`_reverse_derivatives`) and ``engine="forward"``
    (:func:`_forward_derivatives`) evaluate the same integral (Captum's integration points
    and weights, same numbers) with one segmenter forward pass per point for all classes;
    ``engine="captum"`` uses Captum's ``IntegratedGradients`` (one forward pass per point and class).
    """
    check_method(method, steps)
    _check_image_and_mask(image, mask)
    if internal_batch_size is not None and internal_batch_size < 1:
        raise ConfigError(f"attribution.internal_batch_size = {internal_batch_size!r}: expected >= 1 or null.")
    if engine not in ATTRIBUTION_ENGINES:
        raise ConfigError(f"attribution.engine = {engine!r} is not allowed; allowed: {', '.join(ATTRIBUTION_ENGINES)}.")
    internal_batch_size = inputs_per_pass(internal_batch_size, *image.shape[-2:])
    if engine in ("forward", "reverse"):
        return _derivative_region_attribution(segmenter, image, mask, steps, method, internal_batch_size, engine)
    from captum.attr import IntegratedGradients  # only this engine needs Captum (30 MB of memory)

    batch, num_classes = mask.shape[:2]
    segmenter = frozen_segmenter(segmenter)
    with gradients_enabled():
        scores = torch.zeros(batch, num_classes, dtype=image.dtype, device=image.device)
        image = autograd_usable(image)
        region = autograd_usable(mask) > 0.5
        image_index, class_index = torch.nonzero(region.flatten(2).any(dim=2), as_tuple=True)
        if image_index.numel() == 0:
            return scores
        copies = image[image_index]
        region_masks = region[image_index, class_index].unsqueeze(1).to(image.dtype)
        integrated_gradients = IntegratedGradients(_RegionScore(segmenter))
        group_size = copies.shape[0]
        if internal_batch_size is not None:
            group_size = min(group_size, internal_batch_size)
        region_scores = []
        for start in range(0, copies.shape[0], group_size):
            chunk = slice(start, start + group_size)
            attributions = integrated_gradients.attribute(
                copies[chunk],
                baselines=torch.zeros_like(copies[chunk]),
                additional_forward_args=(region_masks[chunk], class_index[chunk]),
                n_steps=steps,
                method=method,
                internal_batch_size=internal_batch_size,
            )
            in_region = attributions.detach().sum(dim=1, keepdim=True) * region_masks[chunk]
            region_scores.append(torch.relu(in_region.sum(dim=(1, 2, 3)) / region_masks[chunk].sum(dim=(1, 2, 3))))
        scores[image_index, class_index] = torch.cat(region_scores).to(scores.dtype)
    return scores


@dataclass
class _IntegrationPoints:
    """What both derivative engines need: the points, their images' region weights and the rule's weights.

    ``K`` = classes present in any image, ``P = steps * B`` points (step-major: point ``k * B + b``
    is ``alpha_k X_b``). Per-image data is kept once per image; :meth:`of_points` spreads it over
    a group of points.
    """

    classes: torch.Tensor  # (K,) class indices
    present: torch.Tensor  # (B, K) bool: class present in image
    points: torch.Tensor  # (P, 1, H, W)
    images: torch.Tensor  # (B, 1, H, W): the images X_b
    region_weights: torch.Tensor  # (B, K, H, W): M_c / |R_c| of each image
    step_weights: torch.Tensor  # (steps,)

    def of_points(self, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The image ``(P', 1, H, W)`` and region weights ``(P', K, H, W)`` of each point in ``part``."""
        batch = self.images.shape[0]
        image_index = torch.arange(self.points.shape[0], device=self.points.device)[part] % batch
        return self.images[image_index], self.region_weights[image_index]


def _integration_points(image: torch.Tensor, mask: torch.Tensor, steps: int, method: str) -> _IntegrationPoints | None:
    """Captum's integration points and weights of ``method`` for ``image (B, 1, H, W)`` and ``mask (B, C, H, W)``.

    None when no class is present in any image.
    """
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes_of, alphas_of = approximation_parameters(method)
    alphas = torch.tensor(alphas_of(steps), dtype=image.dtype, device=image.device)
    batch, height, width = image.shape[0], *image.shape[-2:]
    region = (mask > 0.5).to(image.dtype)  # (B, C, H, W)
    present = region.flatten(2).amax(dim=2) > 0  # (B, C)
    classes = torch.nonzero(present.any(dim=0)).flatten()
    if classes.numel() == 0:
        return None
    region = region[:, classes]  # (B, K, H, W)
    return _IntegrationPoints(
        classes=classes,
        present=present[:, classes],
        points=(alphas.view(-1, 1, 1, 1, 1) * image.unsqueeze(0)).reshape(-1, 1, height, width),
        images=image,
        region_weights=region / region.sum(dim=(2, 3)).clamp_min(1.0).view(batch, -1, 1, 1),
        step_weights=torch.tensor(step_sizes_of(steps), dtype=image.dtype, device=image.device),
    )


def _integrated_scores(integration: _IntegrationPoints, derivative: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Directional derivatives ``(K, P)`` -> region scores ``(B, C)`` (rule weights, relu, 0 where absent)."""
    steps = integration.step_weights.numel()
    batch = integration.present.shape[0]
    per_step = derivative.reshape(-1, steps, batch)  # (K, steps, B)
    integrated = (per_step * integration.step_weights.view(1, -1, 1)).sum(dim=1).transpose(0, 1)  # (B, K)
    scores = torch.zeros(batch, num_classes, dtype=derivative.dtype, device=derivative.device)
    scores[:, integration.classes] = torch.relu(integrated.detach()) * integration.present.to(derivative.dtype)
    return scores


def _derivative_region_attribution(
    segmenter: nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    method: str,
    internal_batch_size: int | None,
    engine: str,
) -> torch.Tensor:
    """Region scores ``(B, C)`` from one directional derivative per (point, class): the ``forward``
    and ``reverse`` engines.

    With ``u_c = X * M_c / |R_c|``, the region mean of ``IG_c(X)`` is
    ``sum_k w_k <u_c, grad s_c(alpha_k X)>`` (Captum's points ``alpha_k`` and weights ``w_k``).
    Both engines run the segmenter forward once per point for all classes present (a per-class
    loop runs it once per point and class); they differ in how they get ``<u_c, grad s_c>``:
    :func:`_forward_derivatives` (Jacobian-vector products) or :func:`_reverse_derivatives`
    (input gradients). ``internal_batch_size`` bounds the segmenter inputs per pass.
    """
    segmenter = frozen_segmenter(segmenter)
    with gradients_enabled():
        integration = _integration_points(autograd_usable(image), autograd_usable(mask), steps, method)
        if integration is None:
            return torch.zeros(mask.shape[:2], dtype=image.dtype, device=image.device)
        num_classes, num_points = integration.classes.numel(), integration.points.shape[0]
        derivatives_of = _forward_derivatives if engine == "forward" else _reverse_derivatives
        # A forward-engine pass carries every class's tangent of its points; a reverse-engine pass only the points.
        chunk = num_points
        if internal_batch_size is not None:
            inputs_per_point = num_classes if engine == "forward" else 1
            chunk = max(1, min(num_points, internal_batch_size // inputs_per_point))
        derivatives = [derivatives_of(segmenter, integration, slice(start, start + chunk))
                       for start in range(0, num_points, chunk)]
        return _integrated_scores(integration, torch.cat(derivatives, dim=1), mask.shape[1])


def _forward_derivatives(segmenter: nn.Module, integration: _IntegrationPoints, part: slice) -> torch.Tensor:
    """``<u_c, grad s_c(x)>`` of the points ``part`` as Jacobian-vector products: ``(K, P')``.

    The derivative of ``s_c`` along ``u_c``; ``vmap`` over the class tangents shares the primal
    pass, so the points cost one forward pass plus one tangent pass per class.
    """
    from torch.func import jvp, vmap

    classes = integration.classes
    images, region_weights = integration.of_points(part)
    region_weights = region_weights.transpose(0, 1)  # (K, P', H, W)
    tangents = (images.transpose(0, 1) * region_weights).unsqueeze(2)  # u_c: (K, P', 1, H, W)

    def along(tangent: torch.Tensor) -> torch.Tensor:
        return jvp(segmenter, (integration.points[part],), (tangent,))[1]

    logit_tangents = vmap(along)(tangents)  # (K, P', C, H, W)
    own_logit = logit_tangents[torch.arange(classes.numel()), :, classes]  # (K, P', H, W)
    return (own_logit * region_weights).sum(dim=(2, 3))


def _reverse_derivatives(segmenter: nn.Module, integration: _IntegrationPoints, part: slice) -> torch.Tensor:
    """``<u_c, grad s_c(x)>`` of the points ``part`` from input gradients: ``(K, P')``.

    The segmenter runs once on the points and the graph is kept for one backward pass per class.
    """
    classes = integration.classes
    points = integration.points[part].detach().requires_grad_(True)
    own_logits = segmenter(points)[:, classes]  # (P', K, H, W)
    images, region_weights = integration.of_points(part)  # (P', 1, H, W), (P', K, H, W)
    along = images * region_weights  # u_c: (P', K, H, W)
    per_class = []
    for k in range(classes.numel()):
        score = (own_logits[:, k] * region_weights[:, k]).sum()
        (gradient,) = torch.autograd.grad(score, points, retain_graph=k + 1 < classes.numel())
        per_class.append((gradient[:, 0] * along[:, k]).sum(dim=(1, 2)))  # (P',)
    return torch.stack(per_class)


def weights_from_region_scores(
    scores_ir: torch.Tensor, scores_vi: torch.Tensor, mask: torch.Tensor, eps: float = DEFAULT_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region scores ``(B, C)`` of each source and mask ``(B, C, H, W)`` -> ``(w_ir, w_vi)``, each ``(B, 1, H, W)``."""
    mask = mask.to(scores_ir.dtype)
    map_ir = torch.einsum("bc,bchw->bhw", scores_ir, mask).unsqueeze(1)
    map_vi = torch.einsum("bc,bchw->bhw", scores_vi, mask).unsqueeze(1)
    weight_ir = (map_ir + eps) / (map_ir + map_vi + 2 * eps)
    return weight_ir, 1.0 - weight_ir


def modality_weights(
    segmenter: nn.Module,
    ir: torch.Tensor,
    vi: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    method: str = "riemann_right",
    internal_batch_size: int | None = DEFAULT_INTERNAL_BATCH_SIZE,
    eps: float = DEFAULT_EPS,
    engine: str = DEFAULT_ENGINE,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribution weights of the two sources: ``(w_ir, w_vi)``, each ``(B, 1, H, W)`` in [0, 1], summing to 1.

    ir, vi: ``(B, 1, H, W)``; mask: one-hot ``(B, C, H, W)``. Both sources go through one batched
    :func:`region_attribution` call. Pixels outside every region get 0.5/0.5. ``scale < 1``
    computes the region scores on images resized by ``scale`` (a speed knob for large images on
    CPU; 1 = exact) and spreads them over the full-resolution mask.
    """
    if ir.shape != vi.shape:
        raise DataError(f"ir {tuple(ir.shape)} and vi {tuple(vi.shape)} must have the same shape")
    if not 0.0 < scale <= 1.0:
        raise ConfigError(f"attribution.scale = {scale!r}: expected a number in (0, 1].")
    batch = ir.shape[0]
    images, masks = torch.cat([ir, vi]), torch.cat([mask, mask])
    if scale < 1.0:
        images, masks = _downscale_for_attribution(images, masks, scale)
    scores = region_attribution(segmenter, images, masks, steps, method, internal_batch_size, engine)
    return weights_from_region_scores(scores[:batch], scores[batch:], mask, eps)


def _downscale_for_attribution(images: torch.Tensor, masks: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, H, W)`` (area-averaged) and region masks ``(N, C, H, W)`` at ``scale``.

    A low-resolution pixel belongs to every region that covers part of it, so small regions
    (distant people) keep a score; regions may overlap there, which the per-region scores allow.
    """
    height, width = images.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small_images = torch.nn.functional.interpolate(images, size=size, mode="area")
    coverage = torch.nn.functional.interpolate((masks > 0.5).to(images.dtype), size=size, mode="area")
    return small_images, (coverage > 0).to(images.dtype)
