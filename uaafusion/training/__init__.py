"""Training: alternating (or joint) schedule of the fusion network and the segmenter, resumable."""

from uaafusion.training.context import training_params
from uaafusion.training.stages import (
    export_models,
    fusion_stage,
    joint_stage,
    open_training,
    pretrain_segmenter,
    read_history,
    run_fingerprint,
    run_stage,
    run_training,
    sample_panels_dir,
    segmentation_stage,
    training_units,
    validation_stage,
)

__all__ = [
    "export_models",
    "fusion_stage",
    "joint_stage",
    "open_training",
    "pretrain_segmenter",
    "read_history",
    "run_fingerprint",
    "training_params",
    "run_stage",
    "run_training",
    "sample_panels_dir",
    "segmentation_stage",
    "training_units",
    "validation_stage",
]
