"""The pictures of the report's sample panels: for the first ``report.samples`` test images, the two
sources, our fused image (``<fused>/ours/NAME.png``, else the model's output), and, with the model
(``<models>/uaafusion.pt``), the infrared weight, the last stage's attention and the segmentation of
the fused image; the ground truth when the image has labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uaafusion.config import Params
from uaafusion.method_names import OUR_METHOD
from uaafusion.paths import ProjectPaths
from uaafusion.report.inputs import relative


@dataclass
class SamplePanels:
    """The pictures of one sample's row, all ``uint8 (H, W, 3)`` (``None`` when unavailable)."""

    name: str
    infrared: np.ndarray
    visible: np.ndarray
    fused: np.ndarray | None = None
    weight_ir: np.ndarray | None = None
    attention: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    ground_truth: np.ndarray | None = None
    model_maps: dict[str, np.ndarray] = field(default_factory=dict)  # a head's own maps (alpha of alpha_blend)

    def titled(self) -> list[tuple[str, np.ndarray | None]]:
        """The pictures in panel order with their titles (a head's own maps after the attention)."""
        return [("infrared", self.infrared), ("visible", self.visible), ("fused (ours)", self.fused),
                ("weight IR (0–1)", self.weight_ir), ("attention, last stage", self.attention),
                *((f"{name} (0–1)", picture) for name, picture in self.model_maps.items()),
                ("segmentation (fused)", self.segmentation), ("ground truth", self.ground_truth)]


def _find_image(folder: Path, name: str) -> Path | None:
    from uaafusion.data.io import IMAGE_EXTENSIONS

    return next((folder / f"{name}{extension}" for extension in IMAGE_EXTENSIONS
                 if (folder / f"{name}{extension}").is_file()), None)


def sample_panels(params: Params, paths: ProjectPaths, notes: list[str]) -> Iterator[SamplePanels]:
    """Panels of the first ``report.samples`` test images; what is missing (the model, fused images) is
    noted in ``notes``. Raises :class:`uaafusion.errors.UAAFusionError` when the test split cannot be read."""
    import torch

    from uaafusion.data.datasets import create_dataset, sample_chroma
    from uaafusion.data.io import read_image, split_luma_chroma
    from uaafusion.device import resolve_device
    from uaafusion.inference import compose_colour, fuse_luma, load_models_for_inference, predict_classes
    from uaafusion.steps import with_absolute_data_root
    from uaafusion.visualize import colourise_map, colourise_segmentation, to_display_rgb

    data = with_absolute_data_root(params, paths).data
    dataset = create_dataset(data, data.test_split, crop=False, seed=params.seed)
    device = resolve_device(params.device)
    models = None
    if paths.model_checkpoint.is_file():
        models = load_models_for_inference(paths.model_checkpoint, device)
    else:
        notes.append(f"No model checkpoint at {relative(paths.model_checkpoint, paths.root)}: "
                     "weight, attention and segmentation panels are left empty.")
    fused_dir, missing_fused = paths.fused / OUR_METHOD, []
    for index in range(min(params.report.samples, len(dataset))):
        sample = dataset[index]
        name, chroma = str(sample["name"]), sample_chroma(sample)
        panels = SamplePanels(name, to_display_rgb(sample["ir"]), to_display_rgb(compose_colour(sample["vi"], chroma)))
        fused_luma: torch.Tensor | None = None
        if (fused_path := _find_image(fused_dir, name)) is not None:
            fused_array = read_image(fused_path)
            panels.fused, fused_luma = to_display_rgb(fused_array), split_luma_chroma(fused_array)[0]
        else:
            missing_fused.append(name)
        if models is not None:
            output = fuse_luma(models.fusion, models.segmenter, sample["ir"][None].to(device),
                               sample["vi"][None].to(device))
            if fused_luma is None:
                fused_luma = output.fused[0].detach().cpu()
                panels.fused = to_display_rgb(compose_colour(fused_luma, chroma))
            panels.weight_ir = colourise_map(output.weight_ir[0])
            if output.attention:
                panels.attention = colourise_map(output.attention[-1][0], colour_map="viridis")
            panels.model_maps = {name: colourise_map(value[0], colour_map="viridis")
                                 for name, value in getattr(output, "maps", {}).items()}
            classes = predict_classes(models.segmenter, fused_luma[None].to(device))[0].cpu()
            panels.segmentation = colourise_segmentation(classes, data.num_classes, ignore_index=None)
        label = sample["label"]
        if bool((label != data.ignore_index).any()):
            panels.ground_truth = colourise_segmentation(label, data.num_classes, data.ignore_index)
        yield panels
    if missing_fused:
        notes.append(f"No fused image in {relative(fused_dir, paths.root)} for {', '.join(missing_fused)}; "
                     "the model's output is shown instead.")
