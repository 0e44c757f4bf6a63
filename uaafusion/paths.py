"""Where the pipeline reads and writes, relative to the project root (the one place for paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    """Pipeline locations under ``root`` (the folder holding ``params.yaml``)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path = ".") -> "ProjectPaths":
        return cls(Path(root).resolve())

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def synthetic_data(self) -> Path:
        return self.root / "data" / "synthetic"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def model_checkpoint(self) -> Path:
        """Final trained models (state dicts + spec): the train step's output."""
        return self.models / "uaafusion.pt"

    @property
    def mlflow_pointer(self) -> Path:
        """The pipeline run's MLflow parent run id, shared by all steps."""
        return self.models / "mlflow-run.json"

    @property
    def checkpoints(self) -> Path:
        """Resumable training states, one folder per params fingerprint (not a DVC output)."""
        return self.root / "checkpoints"

    def run_dir(self, fingerprint: str) -> Path:
        return self.checkpoints / fingerprint

    @property
    def fused(self) -> Path:
        """Fused test images, one folder per method (``ours``, ``average``, ``maximum``)."""
        return self.root / "data" / "fused"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def metrics(self) -> Path:
        """Headline metrics of our model (``dvc metrics show``)."""
        return self.reports / "metrics.json"

    @property
    def evaluation(self) -> Path:
        """Every method's per-image and mean metrics."""
        return self.reports / "evaluation.json"

    @property
    def training_plots(self) -> Path:
        """Training curves for ``dvc plots``: loss per step, metrics per round."""
        return self.reports / "training"
