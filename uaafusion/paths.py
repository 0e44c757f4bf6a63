"""Where the pipeline reads and writes, relative to the project root (the one place for paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uaafusion.config import OutputsConfig


@dataclass(frozen=True)
class ProjectPaths:
    """Pipeline locations under ``root`` (the folder holding ``params.yaml``).

    ``models``, ``fused`` and ``reports`` come from the params' ``outputs`` section (defaults
    ``models``, ``data/fused``, ``reports``); relative folders are relative to ``root``.
    """

    root: Path
    models: Path
    fused: Path
    reports: Path

    @classmethod
    def at(cls, root: str | Path = ".", outputs: "OutputsConfig | None" = None) -> "ProjectPaths":
        from uaafusion.config import OutputsConfig

        root = Path(root).resolve()
        outputs = outputs or OutputsConfig()
        return cls(root=root, models=_under(root, outputs.models), fused=_under(root, outputs.fused),
                   reports=_under(root, outputs.reports))

    def place(self, path: str | Path) -> Path:
        """A path from the params (``~`` expanded): absolute as it is, relative under the project root."""
        return _under(self.root, path)

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def synthetic_data(self) -> Path:
        return self.root / "data" / "synthetic"

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
    def metrics(self) -> Path:
        """Headline metrics of our model (``dvc metrics show``)."""
        return self.reports / "metrics.json"

    @property
    def evaluation(self) -> Path:
        """Every method's per-image and mean metrics."""
        return self.reports / "evaluation.json"

    @property
    def comparison(self) -> Path:
        """Ours against every other method, and each method's fused images against each source, with
        bootstrap intervals (:class:`uaafusion.metrics.comparison.Comparison`): the evaluate step's output."""
        return self.reports / "comparison.json"

    @property
    def generalisation(self) -> Path:
        """Fusion metrics on the unlabeled sets of ``evaluate.generalisation`` (when configured)."""
        return self.reports / "generalisation.json"

    @property
    def degraded(self) -> Path:
        """Means and comparisons on the degraded test sets of ``evaluate.degraded`` (when configured)."""
        return self.reports / "degraded.json"

    @property
    def report_outputs(self) -> tuple[Path, ...]:
        """What the report step writes (``dvc.yaml``'s report outs): both pages, the build record, the figures."""
        return (self.reports / "index.html", self.reports / "README.md", self.reports / "build.json",
                self.reports / "figures")

    @property
    def training_plots(self) -> Path:
        """Training curves for ``dvc plots``: loss per step, metrics per round."""
        return self.reports / "training"


def _under(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


PROJECT_MARKER = "dvc.yaml"


def project_root_for(params_file: str | Path) -> Path:
    """The project root of a params file: the nearest folder, from the file's own folder upwards,
    that holds ``dvc.yaml`` (so ``params/msrs-boxes.yaml`` belongs to the project above
    ``params/``); the file's own folder when none does."""
    folder = Path(params_file).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_MARKER).is_file():
            return candidate
    return folder
