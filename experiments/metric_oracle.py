"""Does *any* image beat both pixel baselines on VIF, Qabf and SSIM at once? Optimise one and see.

Issue #8 asks the fused image to beat the pixel average and the pixel maximum on VIF, Qabf and
SSIM (``SSIM(F, I) + SSIM(F, V)``). ``experiments/metric_frontier.py`` found no fixed rule that
does; this experiment drops rules and networks altogether and asks the metrics themselves. For
each test pair it starts from a blend of the two baselines and moves every pixel of the fused
image by gradient steps on the evaluation's own definitions (written in torch,
:mod:`uaafusion.metrics.differentiable`), maximising the worst of three margins

    margin_m = (m(F) - target_m) / scale_m      for m in (VIF, Qabf, SSIM)

where ``target_m`` is, for this pair, the better of the two baselines on ``m`` (the maximum's VIF
and Qabf, the average's SSIM in practice) and ``scale_m`` the gap between the two baselines on
``m`` (so a margin of -1 is "as far below as the worse baseline"). The minimum is taken softly
(``--temperature``). A final worst margin above 0 means this image beats both baselines on all
three. ``--aim mean`` asks the question of the means instead (the issue's criterion is the mean
over the test split): one optimisation over all selected pairs at once whose margins are those of
the *mean* metrics, ``(mean_i m(F_i) - target_m) / scale_m`` with the better baseline's mean as
target and the gap between the baselines' means as unit, so that a pair where a metric is cheap can
make up for a pair where it is dear (:func:`optimise_means`). The optimiser has only the two source images, as any fusion method has at test time, but
it is aimed at the very metrics it is scored by: it maps what these metrics allow, not a fusion
method to use. Every number written is the numpy reference metric (:mod:`uaafusion.metrics.fusion`)
of the image rounded to integer gray levels, as a gray PNG stores it.

    python experiments/metric_oracle.py --every 3 --out reports/msrs/metric-oracle.json
    python experiments/metric_oracle.py --every 4 --aim mean --out reports/msrs/metric-oracle-mean.json
    python experiments/metric_oracle.py --every 4 --aim mean --start-from data/metric-oracle ...  # polish

About 0.34 s per pair per step on 2 CPU cores (float32, batches of 5); ``--every`` takes every k-th pair.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.metric_frontier import compare_with_baselines  # noqa: E402
from experiments.record import write_record  # noqa: E402
from uaafusion.data.io import read_image, to_gray_uint8, write_png  # noqa: E402
from uaafusion.data.pairs import find_pairs  # noqa: E402
from uaafusion.losses import MARGIN_MIN_GAP, soft_minimum  # noqa: E402
from uaafusion.metrics.differentiable import TARGET_METRICS, target_metrics  # noqa: E402
from uaafusion.metrics.fusion import fusion_metrics  # noqa: E402

MSRS_TEST = "../shared/datasets/msrs-boxes/test"
HISTORY_EVERY = 50


def baselines(ir: np.ndarray, vi: np.ndarray) -> dict[str, np.ndarray]:
    """The pixel average and maximum of two gray float images (not rounded)."""
    return {"average": (ir + vi) / 2.0, "maximum": np.maximum(ir, vi)}


def rounded(image: np.ndarray) -> np.ndarray:
    """What a gray 8-bit PNG stores: rounded to integers, clipped to 0..255 (float64)."""
    return np.clip(np.rint(image), 0, 255)


def read_start(folder: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``folder/<name>.png`` as a gray float image of ``shape``; a missing or mis-sized file is named."""
    path = folder / f"{name}.png"
    if not path.is_file():
        raise SystemExit(f"--start-from {folder}: no {path.name} for pair {name!r}; give the --work folder of a run "
                         "over the same pairs")
    image = to_gray_uint8(read_image(path)).astype(np.float64)
    if image.shape != shape:
        raise SystemExit(f"--start-from: {path} is {image.shape[1]}x{image.shape[0]}, the pair is "
                         f"{shape[1]}x{shape[0]}")
    return image


def score(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> dict[str, float]:
    """The reference metrics of the :func:`rounded` image (all ten; VIF, Qabf and SSIM are the target)."""
    return fusion_metrics(rounded(fused), ir, vi)


def targets(baseline_scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per metric of :data:`TARGET_METRICS`: the better baseline's value."""
    return {metric: max(scores[metric] for scores in baseline_scores.values()) for metric in TARGET_METRICS}


def scales(baseline_scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per metric: the gap between the two baselines on it (at least ``MARGIN_MIN_GAP``, 0.01), the unit of
    :func:`objective`'s margins."""
    return {metric: max(abs(baseline_scores["maximum"][metric] - baseline_scores["average"][metric]), MARGIN_MIN_GAP)
            for metric in TARGET_METRICS}


def objective(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, target: torch.Tensor,
              scale: torch.Tensor, temperature: float) -> torch.Tensor:
    """Minus the soft minimum of the three margins above target, summed over the batch; also the margins.

    margin_m = (m(F) - target_m) / scale_m; soft minimum = ``-T logsumexp(-margins / T)`` (within
    ``T log 3`` of the true minimum). fused, ir, vi: ``(N, 1, H, W)`` on 0-255; target, scale:
    ``(N, 3)`` in :data:`TARGET_METRICS` order. Returns ``(loss (), margins (N, 3))``.
    """
    margins = (target_metrics(fused, ir, vi) - target) / scale
    return -soft_minimum(margins, temperature, dim=1).sum(), margins.detach()


def _as_batch(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` numpy -> ``(N, 1, H, W)`` float32 tensor."""
    return torch.tensor(images[:, None], dtype=torch.float32)


def optimise(start: np.ndarray, ir: np.ndarray, vi: np.ndarray, target: np.ndarray, scale: np.ndarray,
             steps: int, learning_rate: float, temperature: float) -> tuple[np.ndarray, list[list[float]]]:
    """Adam on the pixels of a batch, kept in 0..255. start, ir, vi: ``(N, H, W)``; target, scale ``(N, 3)``.

    Returns the optimised images ``(N, H, W)`` and, every :data:`HISTORY_EVERY` steps and at the
    end, the worst margin of each image (torch float32 values, before rounding).
    """
    fused = _as_batch(start).requires_grad_()
    ir_batch, vi_batch = _as_batch(ir), _as_batch(vi)
    target_batch = torch.tensor(target, dtype=torch.float32)
    scale_batch = torch.tensor(scale, dtype=torch.float32)
    optimiser = torch.optim.Adam([fused], lr=learning_rate)
    history = []
    for step in range(steps + 1):
        optimiser.zero_grad()
        loss, margins = objective(fused, ir_batch, vi_batch, target_batch, scale_batch, temperature)
        if step % HISTORY_EVERY == 0 or step == steps:
            history.append([round(float(worst), 4) for worst in margins.min(dim=1).values])
        if step == steps:
            break
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            fused.clamp_(0.0, 255.0)
    return fused.detach()[:, 0].double().numpy(), history


def optimise_means(start: np.ndarray, ir: np.ndarray, vi: np.ndarray, target: np.ndarray, scale: np.ndarray,
                   steps: int, learning_rate: float, temperature: float,
                   batch: int) -> tuple[np.ndarray, list[list[float]]]:
    """Adam on the pixels of all ``N`` images at once, raising the soft minimum of the margins of the means.

    start, ir, vi: ``(N, H, W)``; target, scale: ``(3,)`` in :data:`TARGET_METRICS` order, for the
    means over the ``N`` images. The gradient of ``softmin_m((mean_i m(F_i) - target_m) / scale_m)``
    with respect to ``F_i`` is ``sum_m w_m dm(F_i)/dF_i / (N scale_m)`` with the soft-minimum weights
    ``w = softmax(-margins / T)``; the images are processed ``batch`` at a time (memory), so each
    step uses the weights of the margins measured at the step before (uniform at the first).
    Returns the optimised images ``(N, H, W)`` and, every :data:`HISTORY_EVERY` steps and at the
    end, the three margins of the means (torch float32 values, before rounding).
    """
    chunks = [(_as_batch(start[first:first + batch]).requires_grad_(), _as_batch(ir[first:first + batch]),
               _as_batch(vi[first:first + batch])) for first in range(0, len(start), batch)]
    target_tensor = torch.tensor(target, dtype=torch.float32)
    scale_tensor = torch.tensor(scale, dtype=torch.float32)
    optimiser = torch.optim.Adam([fused for fused, _, _ in chunks], lr=learning_rate)
    weights = torch.full((len(TARGET_METRICS),), 1.0 / len(TARGET_METRICS))
    history = []
    for step in range(steps + 1):
        optimiser.zero_grad()
        totals = torch.zeros(len(TARGET_METRICS))
        for fused, ir_batch, vi_batch in chunks:
            with torch.set_grad_enabled(step < steps):
                values = target_metrics(fused, ir_batch, vi_batch)
                if step < steps:
                    (-(values.sum(dim=0) * weights / scale_tensor).sum() / len(start)).backward()
            totals += values.detach().sum(dim=0)
        margins = (totals / len(start) - target_tensor) / scale_tensor
        if step % HISTORY_EVERY == 0 or step == steps:
            history.append([round(float(margin), 4) for margin in margins])
            print(f"step {step}: margins of the means " + "  ".join(
                f"{metric} {margin:+.4f}" for metric, margin in zip(TARGET_METRICS, history[-1], strict=True)),
                flush=True)
        if step == steps:
            break
        weights = torch.softmax(-margins / temperature, dim=0)
        optimiser.step()
        with torch.no_grad():
            for fused, _, _ in chunks:
                fused.clamp_(0.0, 255.0)
    return torch.cat([fused.detach()[:, 0] for fused, _, _ in chunks]).double().numpy(), history


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def summarise(per_image: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Means per method, and how often / whether on average the oracle beats both baselines
    (the comparison of :func:`experiments.metric_frontier.compare_with_baselines`, per pair and on the means)."""
    methods = next(iter(per_image.values())).keys()
    means = {method: _mean([scores[method] for scores in per_image.values()]) for method in methods}
    per_pair = [compare_with_baselines(scores)["oracle"] for scores in per_image.values()]
    on_means = compare_with_baselines(means)["oracle"]
    return {"mean": means, "images": len(per_image),
            "images_beating_both_per_metric": {metric: sum(pair["beats_both_baselines"][metric] for pair in per_pair)
                                               for metric in TARGET_METRICS},
            "images_beating_both_on_all_three": sum(pair["beats_both_on_all_three"] for pair in per_pair),
            "mean_beats_both": on_means["beats_both_baselines"],
            "mean_beats_both_on_all_three": on_means["beats_both_on_all_three"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ir", default=f"{MSRS_TEST}/ir")
    parser.add_argument("--vi", default=f"{MSRS_TEST}/vi")
    parser.add_argument("--every", type=int, default=1, help="take every k-th pair (sorted by name)")
    parser.add_argument("--start", type=float, default=0.5,
                        help="start image: (1 - A) average + A maximum (default 0.5)")
    parser.add_argument("--start-from", default=None,
                        help="folder of gray PNGs named like the pairs (e.g. an earlier run's --work): start there "
                             "instead of at the blend")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1.0, help="Adam step size in gray levels")
    parser.add_argument("--temperature", type=float, default=0.02, help="of the soft minimum, in margin units")
    parser.add_argument("--batch", type=int, default=6, help="images per forward pass (memory)")
    parser.add_argument("--aim", choices=("pair", "mean"), default="pair",
                        help="pair: each image beats both baselines on its own (per pair margins); "
                             "mean: the means over the selected pairs do (one joint optimisation)")
    parser.add_argument("--work", default="data/metric-oracle", help="where the optimised images go (gray PNG)")
    parser.add_argument("--out", default="reports/msrs/metric-oracle.json")
    args = parser.parse_args(argv)
    if args.every < 1 or args.steps < 0 or args.batch < 1 or not 0.0 <= args.start <= 1.0 \
            or not args.temperature > 0:
        parser.error("--every and --batch must be at least 1, --steps at least 0, --start within [0, 1], "
                     "--temperature positive")

    pairs = find_pairs(args.ir, args.vi)[:: args.every]
    work = Path(args.work)
    started = time.perf_counter()
    irs = np.stack([to_gray_uint8(read_image(pair.ir_path)).astype(np.float64) for pair in pairs])
    vis = np.stack([to_gray_uint8(read_image(pair.vi_path)).astype(np.float64) for pair in pairs])
    scores, starts = [], []
    for pair, ir, vi in zip(pairs, irs, vis, strict=True):
        simple = baselines(ir, vi)
        scores.append({name: score(image, ir, vi) for name, image in simple.items()})
        starts.append((1 - args.start) * simple["average"] + args.start * simple["maximum"] if args.start_from is None
                      else read_start(Path(args.start_from), pair.name, ir.shape))
    starts = np.stack(starts)
    if args.aim == "pair":
        target = np.array([[targets(image_scores)[metric] for metric in TARGET_METRICS] for image_scores in scores])
        scale = np.array([[scales(image_scores)[metric] for metric in TARGET_METRICS] for image_scores in scores])
        optimised_batches, history = [], []
        for first in range(0, len(pairs), args.batch):
            part = slice(first, first + args.batch)
            images, part_history = optimise(starts[part], irs[part], vis[part], target[part], scale[part],
                                            args.steps, args.lr, args.temperature)
            optimised_batches.append(images)
            history = [row + part_row for row, part_row in zip(history, part_history, strict=True)] \
                if history else part_history
            print(f"{min(first + args.batch, len(pairs))}/{len(pairs)} pairs, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        optimised = np.concatenate(optimised_batches)
        trace = {"worst_margin_every_50_steps": {pair.name: [row[index] for row in history]
                                                 for index, pair in enumerate(pairs)}}
    else:
        baseline_means = {name: _mean([image_scores[name] for image_scores in scores]) for name in scores[0]}
        target = np.array([targets(baseline_means)[metric] for metric in TARGET_METRICS])
        scale = np.array([scales(baseline_means)[metric] for metric in TARGET_METRICS])
        optimised, history = optimise_means(starts, irs, vis, target, scale, args.steps, args.lr,
                                            args.temperature, args.batch)
        trace = {"margins_of_the_means_every_50_steps": [dict(zip(TARGET_METRICS, row, strict=True))
                                                         for row in history]}
    per_image: dict[str, dict[str, dict[str, float]]] = {}
    for pair, ir, vi, start, oracle, image_scores in zip(pairs, irs, vis, starts, optimised, scores, strict=True):
        image_scores["start"] = score(start, ir, vi)
        image_scores["oracle"] = score(oracle, ir, vi)
        per_image[pair.name] = image_scores
        write_png(work / f"{pair.name}.png", rounded(oracle).astype(np.uint8))
    summary = summarise(per_image)
    for method, mean in summary["mean"].items():
        print(f"{method:8s} " + "  ".join(f"{metric} {mean[metric]:.3f}" for metric in TARGET_METRICS))
    settings = {"every": args.every, "start": args.start, "steps": args.steps, "lr": args.lr,
                "temperature": args.temperature}
    if args.start_from is not None:
        settings["start_from"] = args.start_from
    if args.aim != "pair":  # records written before --aim existed are the per-pair aim
        settings["aim"] = args.aim
    write_record(args.out, "metric_oracle.py", "none", settings=settings,
                 seconds=round(time.perf_counter() - started, 1), summary=summary, per_image=per_image, **trace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
