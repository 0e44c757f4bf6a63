"""The trained models as the MLflow pyfunc model ``uaafusion``: the fusion network, its segmenter and the
code that fuses, so that anything MLflow loads runs it::

    fuser = mlflow.pyfunc.load_model("models:/uaafusion@champion")
    fused = fuser.predict({"ir": ir, "vi": vi})  # uint8 (H, W) and (H, W, 3) or (H, W) -> fused uint8

``mlflow models predict`` and ``mlflow models serve`` take the same two inputs as JSON
(``{"inputs": {"ir": [[...]], "vi": [[[...]]]}}``). MLflow fixes the rank of a tensor input, so ``vi``
is declared as a ragged tensor (``object``, shape ``(-1,)``, which MLflow passes through) and checked
here: a ``uint8`` ``(H, W, 3)`` colour or ``(H, W)`` grey image of the size of ``ir``.

This file is also the pyfunc model's code ("models from code", no pickle): MLflow runs it under another
module name when it loads the model, and the last lines hand it the model object.

The registered model's alias ``champion`` moves to a new version only when that run is better on
``tracking.champion_metric`` (:func:`champion_decision`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from uaafusion.config import TrackingConfig
from uaafusion.errors import DataError

REGISTERED_MODEL_NAME = "uaafusion"
MODEL_ALIAS = "champion"
MODEL_ARTIFACT_PATH = "model"  # the pyfunc model's folder in the parent run's artifacts
CHECKPOINT_KEY = "checkpoint"  # the pyfunc artifact holding models/uaafusion.pt
# The packages the bundled code imports when it fuses (pinned to what trained the model).
RUNTIME_PACKAGES = ("torch", "segmentation-models-pytorch", "numpy", "pillow", "pyyaml", "tqdm")
EXAMPLE_SIZE = (32, 48)  # (H, W) of the input example


class UAAFusionModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of :class:`uaafusion.Fuser` (device ``auto``, which obeys ``UAAFUSION_DEVICE``)."""

    # The tensor signature below describes the inputs and pair_from_input checks them; no type-hint schema.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from uaafusion.fuser import Fuser

        self.fuser = Fuser.from_checkpoint(context.artifacts[CHECKPOINT_KEY], device="auto")

    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> np.ndarray:  # noqa: ANN001
        # model_input has no type hint: MLflow would read one as a column schema instead of the signature.
        """``{"ir": uint8 (H, W), "vi": uint8 (H, W, 3) | (H, W)}`` -> the fused ``uint8`` image."""
        ir, vi = pair_from_input(model_input)
        return self.fuser.fuse(ir, vi)


def pair_from_input(model_input: Any) -> tuple[np.ndarray, np.ndarray]:
    """``{"ir": uint8 (H, W), "vi": uint8 (H, W, 3) | (H, W)}`` -> the two checked ``uint8`` arrays
    (``(H, W, 1)`` is taken as ``(H, W)``). Raises :class:`DataError` naming the input and what is wrong."""
    if not isinstance(model_input, dict) or not {"ir", "vi"} <= set(model_input):
        raise DataError("uaafusion expects {'ir': uint8 (H, W) array, 'vi': uint8 (H, W, 3) or (H, W) array}; "
                        f"got {type(model_input).__name__} with keys {sorted(model_input) if isinstance(model_input, dict) else '-'}.")
    ir = _uint8_image("ir", model_input["ir"], colour=False)
    vi = _uint8_image("vi", model_input["vi"], colour=True)
    if ir.shape[:2] != vi.shape[:2]:
        raise DataError(f"ir is {ir.shape[1]}x{ir.shape[0]} but vi is {vi.shape[1]}x{vi.shape[0]} pixels: "
                        "pass a registered pair of the same size.")
    return ir, vi


def _uint8_image(name: str, value: Any, colour: bool) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    allowed = "(H, W) or (H, W, 3)" if colour else "(H, W)"
    if not (array.ndim == 2 or (colour and array.ndim == 3 and array.shape[2] == 3)) or min(array.shape[:2]) < 1:
        raise DataError(f"{name}: expected a {allowed} image, got an array of shape {array.shape}.")
    if array.dtype != np.uint8:
        try:
            numbers = array.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(f"{name}: expected uint8 pixel values, got {array.dtype} ({error}).") from error
        if not np.all(np.isfinite(numbers)) or numbers.min() < 0 or numbers.max() > 255 or np.any(numbers % 1):
            raise DataError(f"{name}: expected uint8 pixel values (whole numbers 0..255), got {array.dtype} "
                            f"values from {numbers.min()} to {numbers.max()}.")
        array = numbers.astype(np.uint8)
    return np.ascontiguousarray(array)


def model_signature() -> Any:
    """Inputs ``ir`` (``uint8 (-1, -1)``) and ``vi`` (ragged: ``(H, W, 3)`` or ``(H, W)``, see the module)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1), "ir"),
                                         TensorSpec(np.dtype(object), (-1,), "vi")]))


def input_example() -> dict[str, np.ndarray]:
    """A small synthetic pair: a warm square on a dark infrared image, a colour gradient visible image."""
    height, width = EXAMPLE_SIZE
    rows, columns = np.mgrid[0:height, 0:width]
    ir = np.full((height, width), 40, np.uint8)
    ir[height // 4:height // 2, width // 3:width // 2] = 220
    vi = np.stack([columns * 255 // width, rows * 255 // height, np.full_like(rows, 96)], axis=-1).astype(np.uint8)
    return {"ir": ir, "vi": vi}


def runtime_requirements() -> list[str]:
    """``package==version`` of :data:`RUNTIME_PACKAGES` as installed here (mlflow adds itself)."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]


def save_pyfunc_model(checkpoint: Path, path: Path) -> Path:
    """Write the pyfunc model of ``checkpoint`` (``models/uaafusion.pt``) to the new folder ``path``:
    the checkpoint, the ``uaafusion`` package's code, the signature, an input example, requirements."""
    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="uaafusion-code-") as code:
        bundled = Path(code) / package.name
        shutil.copytree(package, bundled, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        mlflow.pyfunc.save_model(
            path=str(path), python_model=__file__, artifacts={CHECKPOINT_KEY: str(checkpoint)},
            code_paths=[str(bundled)], signature=model_signature(), input_example=input_example(),
            pip_requirements=runtime_requirements(),
        )
    return path


@dataclass(frozen=True)
class Registration:
    """A registered version of ``uaafusion`` and whether ``champion`` moved to it (``reason`` says why)."""

    version: str
    champion: bool
    reason: str


def register_model(tracker: Any, checkpoint: Path, config: TrackingConfig) -> Registration:
    """Log ``checkpoint`` as the pyfunc model ``model`` of the tracker's parent run, register it as a
    new version of :data:`REGISTERED_MODEL_NAME`, and move :data:`MODEL_ALIAS` to it when
    :func:`champion_decision` says so."""
    client, run_id = tracker.client, tracker.parent_run_id
    with tempfile.TemporaryDirectory(prefix="uaafusion-pyfunc-") as folder:
        local = save_pyfunc_model(Path(checkpoint), Path(folder) / MODEL_ARTIFACT_PATH)
        client.log_artifacts(run_id, str(local), MODEL_ARTIFACT_PATH)
    try:
        client.get_registered_model(REGISTERED_MODEL_NAME)
    except Exception:  # noqa: BLE001 - not registered yet
        client.create_registered_model(REGISTERED_MODEL_NAME, description=(
            "UAAFusion infrared-visible fusion (fusion network, segmenter, code). predict({'ir': uint8 (H, W), "
            "'vi': uint8 (H, W, 3) or (H, W)}) returns the fused uint8 image."))
    move, reason = champion_decision(client, run_id, config)
    metric_value = client.get_run(run_id).data.metrics.get(config.champion_metric)
    version = client.create_model_version(
        REGISTERED_MODEL_NAME, f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}", run_id=run_id, await_creation_for=0,
        tags={config.champion_metric: str(metric_value)} if metric_value is not None else None,
    ).version
    if move:
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, MODEL_ALIAS, version)
    return Registration(str(version), move, reason)


def champion_decision(client: Any, run_id: str, config: TrackingConfig) -> tuple[bool, str]:
    """Whether the model of ``run_id`` becomes the champion: when there is none yet, when the
    champion's run lacks ``config.champion_metric``, or when this run is strictly better on it."""
    metric, goal = config.champion_metric, config.champion_goal
    try:
        current = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, MODEL_ALIAS)
    except Exception:  # noqa: BLE001 - no champion yet
        return True, "first champion"
    new = client.get_run(run_id).data.metrics.get(metric)
    if new is None:
        return False, f"this run has no metric {metric}; champion stays version {current.version}"
    try:
        best = client.get_run(current.run_id).data.metrics.get(metric)
    except Exception:  # noqa: BLE001 - the champion's run was deleted
        best = None
    if best is None:
        return True, f"the champion (version {current.version}) has no metric {metric}"
    better = new > best if goal == "max" else new < best
    verdict = "better" if better else "not better"
    return better, f"{metric} {new:.4g} vs champion version {current.version}'s {best:.4g} ({goal}): {verdict}"


if __name__ != "uaafusion.serving":  # run by MLflow as the pyfunc model's code file ("models from code")
    from mlflow.models import set_model

    set_model(UAAFusionModel())
