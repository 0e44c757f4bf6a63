"""The report's figures, drawn with matplotlib into ``figures/`` of the report folder.

- ``training_loss.png``: the loss per step coloured by stage, and the loss terms;
- ``validation_rounds.png``: one small panel per validation metric against the round;
- ``sample_<NAME>.png``: one row of pictures per test sample (:class:`uaafusion.report.samples.SamplePanels`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uaafusion.integrity import write_atomically

FIGURE_DPI = 100
SAMPLE_PREFIX = "sample_"


@dataclass(frozen=True)
class Figure:
    """A PNG of the report: ``file`` relative to the report folder (``figures/NAME.png``)."""

    title: str
    file: str
    caption: str = ""


TRAINING_LOSS = Figure("Training loss", "figures/training_loss.png",
                       "Loss per optimisation step, coloured by training stage; right: the individual loss terms.")
VALIDATION_ROUNDS = Figure("Validation per round", "figures/validation_rounds.png",
                           "Fusion metrics and mIoU of the segmenter on the fused validation images after each round.")


def sample_file(name: str) -> str:
    """The figure file of the sample ``name``: ``figures/sample_<name>.png``, unsafe characters as ``_``."""
    return f"figures/{SAMPLE_PREFIX}{re.sub(r'[^A-Za-z0-9._-]+', '_', name) or 'sample'}.png"


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty list when the file is missing or has no rows)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    """The column ``name`` as floats, ``nan`` where empty or not a number: ``float64 (len(rows),)``."""
    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan
    return np.array([number(row.get(name)) for row in rows], dtype=float)


def save(figure: Any, out_path: Path, tight: bool = True) -> Path:
    """Write ``figure`` as a PNG without a timestamp or software tag (the same bytes for the same plot)."""
    import matplotlib.pyplot as plt

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        figure.tight_layout()
    write_atomically(out_path, lambda stream: figure.savefig(stream, dpi=FIGURE_DPI, format="png",
                                                             metadata={"Software": None}))
    plt.close(figure)
    return out_path


def plot_training_loss(rows: list[dict[str, str]], out_path: Path) -> Path | None:
    """Loss per step coloured by stage (left) and the ``loss_*`` terms (right); ``None`` without losses."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    losses = _column(rows, "loss")
    if not rows or not np.isfinite(losses).any():
        return None
    steps = _column(rows, "step")
    steps = steps if np.isfinite(steps).all() else np.arange(len(rows), dtype=float)
    # "round-2/fusion" -> "fusion": one colour per kind of stage, whatever the round.
    stages = [(row.get("stage") or "?").rsplit("/", 1)[-1] for row in rows]
    colours = {stage: colormaps["tab10"](index % 10) for index, stage in enumerate(dict.fromkeys(stages))}
    terms = [column for column in rows[0] if column.startswith("loss_")]
    figure, axes = plt.subplots(1, 2 if terms else 1, figsize=(11 if terms else 6.5, 3.6), squeeze=False)
    labelled: set[str] = set()
    start = 0
    for stop in range(1, len(stages) + 1):
        if stop == len(stages) or stages[stop] != stages[start]:  # one line per contiguous run of a stage
            stage = stages[start]
            axes[0, 0].plot(steps[start:stop], losses[start:stop], color=colours[stage], linewidth=1.2,
                            label=None if stage in labelled else stage, marker="o" if stop - start == 1 else None,
                            markersize=3)
            labelled.add(stage)
            start = stop
    axes[0, 0].set(xlabel="step", ylabel="loss", title="Training loss per step, by stage")
    axes[0, 0].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    if terms:
        _plot_terms(axes[0, 1], steps, {column.removeprefix("loss_"): _column(rows, column) for column in terms})
    return save(figure, out_path)


def _plot_terms(axis: Any, steps: np.ndarray, terms: dict[str, np.ndarray]) -> None:
    """Each loss term against the step; missing values break the line; log scale when all are positive."""
    positive = True
    for name, values in terms.items():
        finite = np.isfinite(values)
        if finite.any():
            positive &= bool((values[finite] > 0).all())
            axis.plot(steps, values, linewidth=1.0, label=name, marker="." if finite.sum() == 1 else None)
    if positive:
        axis.set_yscale("log")
    axis.set(xlabel="step", title="Loss terms")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)


def plot_validation_rounds(rows: list[dict[str, str]], out_path: Path) -> Path | None:
    """One small panel per validation metric against the round, mIoU with its ``_ir``/``_vi`` references;
    ``None`` without a value."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not rows:
        return None
    rounds = _column(rows, "round")
    rounds = rounds if np.isfinite(rounds).all() else np.arange(1, len(rows) + 1, dtype=float)
    columns = [column for column in rows[0] if column not in ("step", "round", "stage")]
    references = [column for column in ("mIoU_ir", "mIoU_vi") if column in columns and "mIoU" in columns]
    panels = [(column, [column, *references] if column == "mIoU" else [column])
              for column in columns if column not in references]
    panels = [(title, group) for title, group in panels
              if any(np.isfinite(_column(rows, column)).any() for column in group)]
    if not panels:
        return None
    per_row = min(4, len(panels))
    figure, axes = plt.subplots(math.ceil(len(panels) / per_row), per_row,
                                figsize=(2.9 * per_row, 2.3 * math.ceil(len(panels) / per_row)), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.axis("off")
    for axis, (title, group) in zip(axes.flat, panels):
        for column in group:
            label = {"mIoU": "fused", "mIoU_ir": "ir", "mIoU_vi": "vi"}[column] if len(group) > 1 else None
            axis.plot(rounds, _column(rows, column), marker="o", markersize=3, linewidth=1.2, label=label)
        axis.set_title(title, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if len(group) > 1:
            axis.legend(fontsize=6)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlim(rounds.min() - 0.5, rounds.max() + 0.5)
    for axis in axes[-1]:
        axis.set_xlabel("round", fontsize=8)
    figure.suptitle("Validation metrics per round", fontsize=10)
    return save(figure, out_path)


def plot_sample_grid(name: str, pictures: Sequence[tuple[str, np.ndarray | None]], class_names: Sequence[str],
                     out_path: Path) -> Path:
    """One row of titled pictures (``uint8 (H, W, 3)``, ``None`` drawn as "not available") with the class
    legend below and ``name`` above."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from uaafusion.visualize import segmentation_palette

    height, width = next(picture for _, picture in pictures if picture is not None).shape[:2]
    panel_width = 1.75
    figure, axes = plt.subplots(1, len(pictures), squeeze=False, figsize=(
        panel_width * len(pictures), panel_width * height / max(width, 1) + 0.9))
    for axis, (title, picture) in zip(axes[0], pictures):
        axis.set_xticks([])
        axis.set_yticks([])
        if picture is None:
            axis.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=7, transform=axis.transAxes)
            axis.set_facecolor("#eeeeee")
        else:
            axis.imshow(picture, interpolation="nearest")
        axis.set_title(title, fontsize=8)
    if class_names:
        palette = segmentation_palette(len(class_names)) / 255.0
        handles = [Patch(facecolor=palette[index], edgecolor="#888888", label=label)
                   for index, label in enumerate(class_names)]
        handles.append(Patch(facecolor="white", edgecolor="#888888", label="unlabelled"))
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)
    figure.suptitle(name, fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.80, bottom=0.18, wspace=0.05)
    return save(figure, out_path, tight=False)
