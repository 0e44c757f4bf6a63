"""What a pipeline run checks before any work: its steps, its parameters, its device and its data.

The Prefect flow (``flows/pipeline.py``) would meet each of these faults later, inside a task, where
Prefect logs it with a traceback; checked here first, a bad parameter or a bad input ends the run
with one message naming the key or the file (``uaafusion train`` calls this before it starts the
flow). The arguments are the flow's parameters: ``rounds`` and ``dataset_root`` are its shortcuts
for the overrides ``train.rounds`` and ``data.root``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uaafusion.config import Params, load_params
from uaafusion.errors import ConfigError

PIPELINE_STEPS: tuple[str, ...] = ("prepare", "train", "evaluate", "report")
"""The pipeline's steps, in the order they run."""
DATA_STEPS: frozenset[str] = frozenset({"prepare", "train", "evaluate"})
"""Steps that read the configured dataset."""


def flow_overrides(overrides: Mapping[str, Any] | None, rounds: int | None = None,
                   dataset_root: str | None = None) -> dict[str, Any]:
    """The overrides a flow run applies: ``overrides`` with the shortcuts ``rounds`` and ``dataset_root``."""
    merged = dict(overrides or {})
    if rounds is not None:
        merged["train.rounds"] = rounds
    if dataset_root is not None:
        merged["data.root"] = dataset_root
    return merged


def check_steps(steps: Sequence[str] | None) -> list[str]:
    """The chosen steps (all when none are given); :class:`ConfigError` naming an unknown one."""
    chosen = list(steps or PIPELINE_STEPS)
    unknown = [step for step in chosen if step not in PIPELINE_STEPS]
    if unknown:
        raise ConfigError(f"unknown pipeline step(s) {', '.join(map(repr, unknown))}; choose among "
                          f"{', '.join(PIPELINE_STEPS)} (comma-separated, e.g. --steps train,evaluate).")
    return chosen


def check_pipeline_run(project_root: str | Path, params_file: str | Path = "params.yaml",
                       steps: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
                       rounds: int | None = None, dataset_root: str | None = None) -> Params:
    """Check a pipeline run before it starts, as the flow would read it; returns its params.

    Raises :class:`~uaafusion.errors.ConfigError` (an unknown step, a missing params file, a wrong key,
    type or value, in the file or in the overrides), :class:`~uaafusion.errors.DeviceError` (a device
    this machine does not have) or :class:`~uaafusion.errors.DataError` (the dataset of ``data.root``,
    read as the prepare step reads it: every pair, label and box file) when a step reads it. The
    embedded synthetic set is not checked when the prepare step is there to write it.
    """
    from uaafusion.device import resolve_device
    from uaafusion.paths import ProjectPaths
    from uaafusion.steps import check_dataset, uses_synthetic_data, with_absolute_data_root

    chosen = check_steps(steps)
    root = Path(project_root).resolve()
    params_path = Path(params_file) if Path(params_file).is_absolute() else root / params_file
    params = load_params(params_path, flow_overrides(overrides, rounds, dataset_root))
    resolve_device(params.device)
    paths = ProjectPaths.at(root, params.outputs)
    if DATA_STEPS & set(chosen) and not ("prepare" in chosen and uses_synthetic_data(params, paths)):
        check_dataset(with_absolute_data_root(params, paths))
    return params
