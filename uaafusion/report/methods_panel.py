"""The methods comparison's panel: for the same test pairs, the two sources, then per trained method its
fused image and its own map (``alpha_blend``'s α, ``mask_guided``'s m, the unfolding network's last
attention gate; for ``prompt`` the infrared attribution weight, titled with the degradation kind its
classifier predicts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uaafusion.method_names import OUR_METHOD
from uaafusion.report.methods import MethodRun

PANEL_FILE = "figures/methods_panel.png"
"""The panel, relative to the comparison's report folder."""


@dataclass
class MethodPictures:
    """One method's pictures of one pair (``uint8 (H, W, 3)``) and their titles."""

    fused: np.ndarray
    own_map: np.ndarray | None
    map_title: str


def own_map(output, method: str) -> tuple[np.ndarray | None, str]:
    """The map a model adds (the first of ``output.maps``), else its last attention gate, else its infrared
    weight; the title says which (and, with classifier logits, the predicted degradation kind)."""
    from uaafusion.visualize import colourise_map

    maps = getattr(output, "maps", None) or {}
    if maps:
        name, value = next(iter(maps.items()))
        picture, title = colourise_map(value[0], colour_map="viridis"), f"{method}: {name} (0–1)"
    elif getattr(output, "attention", None):
        picture, title = colourise_map(output.attention[-1][0], colour_map="viridis"), f"{method}: attention"
    else:
        picture, title = colourise_map(output.weight_ir[0]), f"{method}: weight IR"
    logits = getattr(output, "degradation_logits", None)
    if logits is not None:
        from uaafusion.models.prompt import DEGRADATION_KINDS

        probabilities = logits[0].softmax(-1)
        best = int(probabilities.argmax())
        title += f" (kind: {DEGRADATION_KINDS[best]} {float(probabilities[best]):.2f})"
    return picture, title


def panel_pictures(runs: Sequence[MethodRun], count: int) -> list[tuple[str, np.ndarray, np.ndarray,
                                                                           list[MethodPictures]]]:
    """``(name, infrared, visible, [per method])`` for the first ``count`` test pairs of the first run's test
    split; each method's fused image is the one its evaluate step wrote (``<fused>/ours/NAME.png``), else
    its model's output."""
    from uaafusion.data.datasets import create_dataset, sample_chroma
    from uaafusion.data.io import read_image
    from uaafusion.device import resolve_device
    from uaafusion.inference import compose_colour, fuse_luma, load_models_for_inference
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.visualize import to_display_rgb

    first = runs[0]
    data = with_absolute_data_root(first.params, first.paths).data
    dataset = create_dataset(data, data.test_split, crop=False, seed=first.params.seed)
    device = resolve_device(first.params.device)
    samples = [dataset[index] for index in range(min(count, len(dataset)))]
    rows = [(str(sample["name"]), to_display_rgb(sample["ir"]),
             to_display_rgb(compose_colour(sample["vi"], sample_chroma(sample))), []) for sample in samples]
    for run in runs:
        models = load_models_for_inference(run.paths.model_checkpoint, device)
        for sample, (name, _, _, pictures) in zip(samples, rows):
            output = fuse_luma(models.fusion, models.segmenter, sample["ir"][None].to(device),
                               sample["vi"][None].to(device))
            fused_path = run.paths.fused / OUR_METHOD / f"{name}.png"
            fused = read_image(fused_path) if fused_path.is_file() else compose_colour(
                output.fused[0].detach().cpu(), sample_chroma(sample))
            picture, title = own_map(output, run.name)
            pictures.append(MethodPictures(to_display_rgb(fused), picture, title))
    return rows


def plot_methods_panel(runs: Sequence[MethodRun], count: int, out_path: Path) -> Path:
    """Draw the panel (one row per test pair) into ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uaafusion.report.figures import save

    rows = panel_pictures(runs, count)
    columns = 2 + 2 * len(runs)
    height, width = rows[0][1].shape[:2]
    panel_width = 1.6
    figure, axes = plt.subplots(len(rows), columns, squeeze=False, figsize=(
        panel_width * columns, (panel_width * height / max(width, 1) + 0.35) * len(rows)))
    for axes_row, (name, infrared, visible, pictures) in zip(axes, rows):
        cells = [(f"{name}: infrared", infrared), ("visible", visible)]
        for run, method in zip(runs, pictures):
            cells += [(f"{run.name}: fused", method.fused), (method.map_title, method.own_map)]
        for axis, (title, picture) in zip(axes_row, cells):
            axis.set_xticks([])
            axis.set_yticks([])
            if picture is None:
                axis.set_facecolor("#eeeeee")
            else:
                axis.imshow(picture, interpolation="nearest")
            axis.set_title(title, fontsize=6)
    figure.subplots_adjust(left=0.005, right=0.995, top=0.96, bottom=0.01, wspace=0.04, hspace=0.25)
    return save(figure, out_path, tight=False)
