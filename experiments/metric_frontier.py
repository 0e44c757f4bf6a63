"""Can a simple, label-free fusion beat both pixel baselines on VIF, Qabf and SSIM at once?

Issue #8 asks our model to beat the pixel average and the pixel maximum on VIF, Qabf and SSIM.
SSIM here is ``SSIM(F, I) + SSIM(F, V)``, which a compromise such as the average favours, while VIF
and Qabf favour keeping the stronger source, which the maximum does. This experiment asks whether
the target is reachable by any fixed rule, no learning involved, by scoring a few handmade
fusions with exactly the evaluation's protocol (PNG files, the same metrics, ``evaluate_folders``):

- ``blend-A``: ``(1 - A) * average + A * maximum`` for A in 0.25, 0.5, 0.75 (A 0 is the average,
  A 1 the maximum);
- ``pyramid``: Laplacian-pyramid fusion, coarsest level the average of the sources', every detail
  level the coefficient of larger magnitude (the classic multi-scale rule);
- ``pyramid-max-base``: the same with the maximum as the coarsest level.

With ``--checkpoint`` the model is placed among them, with two of its parts taken apart:

- ``ours``: the image ``uaafusion fuse`` makes (the model's inference mask and attribution weights);
- ``ours-attribution-target``: ``w_I I + w_V V`` with those weights, where the unfolding's data term
  pulls (no network correction);
- ``ours-uniform-weights``: the network with ``w_I = w_V = 1/2`` (its corrections, no attribution);
- ``ours-feathered-weights``: the network with the model's weights blurred (Gaussian, sigma
  :data:`FEATHER_SIGMA` pixels; ``w_V = 1 - w_I`` still): the weights are constant per class region
  and jump at every region edge, which may draw edges that neither source has;

and the model's own segmenter also scores the box masks of every candidate (box-mask mIoU, as in
``reports/msrs/metrics.json``).

    python experiments/metric_frontier.py --params params/msrs-boxes.yaml \\
        --checkpoint models/msrs/uaafusion.pt --out reports/msrs/metric-frontier.json

Fused images go to ``--work`` (default ``data/metric-frontier``; colour as ``uaafusion fuse``
makes it: the fused luma with the visible image's CrCb).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.record import write_record  # noqa: E402
from uaafusion.config import load_params  # noqa: E402
from uaafusion.data.datasets import create_dataset, layout_folders, sample_chroma, split_directory  # noqa: E402
from uaafusion.data.io import tensor_to_array, write_png  # noqa: E402
from uaafusion.inference import compose_colour, fuse_luma, load_models_for_inference  # noqa: E402
from uaafusion.metrics.differentiable import TARGET_METRICS, filter_valid  # noqa: E402
from uaafusion.metrics.evaluate import evaluate_folders  # noqa: E402
from uaafusion.metrics.fusion import gaussian_kernel_1d  # noqa: E402
from uaafusion.paths import ProjectPaths, project_root_for  # noqa: E402
from uaafusion.steps import with_absolute_data_root  # noqa: E402

PYRAMID_LEVELS = 4
BASELINES = ("average", "maximum")
_BINOMIAL_TAPS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

Fusion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def separable_filter(image: torch.Tensor, taps: torch.Tensor, padding: str) -> torch.Tensor:
    """Correlate ``(B, 1, H, W)`` with ``outer(taps, taps)`` (odd length), borders padded with
    ``padding`` (``"reflect"`` or ``"replicate"``): same size out."""
    radius = taps.numel() // 2
    padded = functional.pad(image, (radius, radius, radius, radius), mode=padding)
    return filter_valid(padded, taps.to(image))


def _blur(image: torch.Tensor) -> torch.Tensor:
    """The pyramid's 5-tap binomial blur, reflected borders."""
    return separable_filter(image, _BINOMIAL_TAPS, "reflect")


def _upsample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return functional.interpolate(image, size=size, mode="bilinear", align_corners=False)


def laplacian_pyramid(image: torch.Tensor, levels: int = PYRAMID_LEVELS) -> list[torch.Tensor]:
    """``(B, 1, H, W)`` -> ``levels`` detail images (finest first) followed by the coarsest Gaussian level.

    :func:`collapse_pyramid` inverts it exactly (up to float round-off) for any ``H, W``.
    """
    pyramid: list[torch.Tensor] = []
    current = image
    for _ in range(levels):
        smaller = _blur(current)[..., ::2, ::2]
        pyramid.append(current - _upsample(smaller, tuple(current.shape[-2:])))
        current = smaller
    pyramid.append(current)
    return pyramid


def collapse_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """The image whose :func:`laplacian_pyramid` is ``pyramid``."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = detail + _upsample(image, tuple(detail.shape[-2:]))
    return image


def pyramid_fusion(ir: torch.Tensor, vi: torch.Tensor, base: str = "average",
                   levels: int = PYRAMID_LEVELS) -> torch.Tensor:
    """Laplacian-pyramid fusion of ``ir, vi (B, 1, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in [0, 1].

    Each detail level keeps, per pixel, the coefficient of larger magnitude; the coarsest level is
    the sources' ``base`` (``"average"`` or ``"maximum"``).
    """
    if base not in BASELINES:
        raise ValueError(f"base {base!r}: expected one of {', '.join(BASELINES)}")
    ir_pyramid, vi_pyramid = laplacian_pyramid(ir, levels), laplacian_pyramid(vi, levels)
    details = [torch.where(a.abs() >= b.abs(), a, b) for a, b in zip(ir_pyramid[:-1], vi_pyramid[:-1])]
    coarsest = (ir_pyramid[-1] + vi_pyramid[-1]) / 2 if base == "average" else torch.maximum(ir_pyramid[-1],
                                                                                            vi_pyramid[-1])
    return collapse_pyramid([*details, coarsest]).clamp(0.0, 1.0)


def blend(share_of_maximum: float) -> Fusion:
    """``(1 - share) * (I + V) / 2 + share * max(I, V)``."""
    return lambda ir, vi: (1.0 - share_of_maximum) * (ir + vi) / 2 + share_of_maximum * torch.maximum(ir, vi)


CANDIDATES: dict[str, Fusion] = {
    "average": blend(0.0),
    "blend-0.25": blend(0.25),
    "blend-0.5": blend(0.5),
    "blend-0.75": blend(0.75),
    "maximum": blend(1.0),
    "pyramid": lambda ir, vi: pyramid_fusion(ir, vi, "average"),
    "pyramid-max-base": lambda ir, vi: pyramid_fusion(ir, vi, "maximum"),
}


MODEL_CANDIDATES = ("ours", "ours-attribution-target", "ours-uniform-weights", "ours-feathered-weights")
FEATHER_SIGMA = 8.0


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, 1, H, W)`` (taps to 3 sigma, replicated borders; same size)."""
    radius = max(1, math.ceil(3 * sigma))
    return separable_filter(image, torch.from_numpy(gaussian_kernel_1d(2 * radius + 1, sigma)), "replicate")


def model_candidates(fusion: torch.nn.Module, segmenter: torch.nn.Module, ir: torch.Tensor, vi: torch.Tensor,
                     wanted: tuple[str, ...] = MODEL_CANDIDATES) -> dict[str, torch.Tensor]:
    """The ``wanted`` :data:`MODEL_CANDIDATES` images ``(B, 1, H, W)`` of the model for ``ir, vi (B, 1, H, W)``.

    ``ours`` and the attribution target come from one inference pass; the uniform and feathered
    variants cost one more network pass each (skipped when not wanted).
    """
    with torch.no_grad():  # the attribution inside still takes gradients of its inputs
        output = fuse_luma(fusion, segmenter, ir, vi)
        images = {"ours": output.fused, "ours-attribution-target": output.weight_ir * ir + output.weight_vi * vi}
        fusion.eval()
        segmenter.eval()
        if "ours-uniform-weights" in wanted:
            half = torch.full_like(ir, 0.5)
            images["ours-uniform-weights"] = fusion(ir, vi, segmenter, mask=output.mask, weights=(half, half)).fused
        if "ours-feathered-weights" in wanted:
            feathered_ir = gaussian_blur(output.weight_ir, FEATHER_SIGMA)
            images["ours-feathered-weights"] = fusion(ir, vi, segmenter, mask=output.mask,
                                                      weights=(feathered_ir, 1.0 - feathered_ir)).fused
    return {name: image for name, image in images.items() if name in wanted}


def write_candidates(dataset: Any, out_root: Path, models: tuple[torch.nn.Module, torch.nn.Module] | None = None,
                     only: list[str] | None = None) -> dict[str, Path]:
    """Fuse each sample of ``dataset`` with every :data:`CANDIDATES` rule (and, given ``models``
    ``(fusion, segmenter)``, the :data:`MODEL_CANDIDATES`), or the ``only`` ones of them,
    -> ``out_root/<name>/NAME.png``."""
    names = [*CANDIDATES, *(MODEL_CANDIDATES if models is not None else ())]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise SystemExit(f"--candidates: unknown {', '.join(unknown)}; choose from {', '.join(names)} "
                         "(the model's need --checkpoint)")
    folders = {name: out_root / name for name in names if only is None or name in only}
    for index in range(len(dataset)):
        sample = dataset[index]
        ir, vi = sample["ir"][None], sample["vi"][None]
        chroma = sample_chroma(sample)
        images = {name: fuse(ir, vi) for name, fuse in CANDIDATES.items() if name in folders}
        wanted = tuple(name for name in MODEL_CANDIDATES if name in folders)
        if models is not None and wanted:
            images.update(model_candidates(*models, ir, vi, wanted))
        for name, luma in images.items():
            write_png(folders[name] / f"{sample['name']}.png",
                      tensor_to_array(compose_colour(luma[0].clamp(0.0, 1.0), chroma)))
    return folders


def compare_with_baselines(means: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per candidate: its :data:`TARGET_METRICS`, whether each beats both baselines, and whether all do."""
    summary = {}
    for name, mean in means.items():
        beats = {metric: all(mean[metric] > means[baseline][metric] for baseline in BASELINES if baseline != name)
                 for metric in TARGET_METRICS}
        summary[name] = {**{metric: mean[metric] for metric in TARGET_METRICS},
                         "beats_both_baselines": beats, "beats_both_on_all_three": all(beats.values())}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/msrs-boxes.yaml")
    parser.add_argument("--split", default=None, help="default: the params' test split")
    parser.add_argument("--checkpoint", default=None,
                        help="add this model's images and score box-mask mIoU with its segmenter")
    parser.add_argument("--candidates", default=None,
                        help="comma-separated names to fuse and score (default: all; the two pixel "
                             "baselines are always scored)")
    parser.add_argument("--work", default="data/metric-frontier", help="where the fused images go")
    parser.add_argument("--out", default="reports/msrs/metric-frontier.json")
    args = parser.parse_args(argv)

    params_file = Path(args.params).resolve()
    paths = ProjectPaths.at(project_root_for(params_file))
    params = with_absolute_data_root(load_params(params_file), paths)
    split = args.split or params.data.test_split
    dataset = create_dataset(params.data, split, crop=False)
    models = None
    if args.checkpoint is not None:
        loaded = load_models_for_inference(paths.place(args.checkpoint))
        models = (loaded.fusion, loaded.segmenter)
    only = [*BASELINES, *args.candidates.split(",")] if args.candidates else None
    folders = write_candidates(dataset, paths.place(args.work), models, only)
    segmenter = models[1] if models is not None else None
    sources = layout_folders(params.data.layout, split_directory(params.data.layout, params.data.root, split))
    means = {}
    for name, folder in folders.items():
        scored = segmenter is not None
        result = evaluate_folders(sources.ir, sources.vi, folder, labels_dir=sources.label if scored else None,
                                  boxes_dir=sources.boxes if scored else None, segmenter=segmenter,
                                  num_classes=params.data.num_classes, class_names=list(params.data.class_names),
                                  ignore_index=params.data.ignore_index, progress=False)
        means[name] = result["mean"]
        print(f"{name:18s} " + "  ".join(f"{metric} {means[name][metric]:.3f}" for metric in TARGET_METRICS))
    write_record(paths.place(args.out), "metric_frontier.py", args.params, split=split, images=len(dataset),
                 summary=compare_with_baselines(means), mean=means)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
