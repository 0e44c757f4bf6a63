"""``params.yaml`` -> typed, validated configuration; one dataclass per section.

Every key is checked: an unknown key, a wrong type or a value outside the allowed set raises
:class:`ConfigError` naming the dotted key (``train.schedule``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from uaafusion.errors import ConfigError
from uaafusion.method_names import PIPELINE_METHODS

Layout = Literal["msrs", "fmb", "boxes", "pairs"]


@dataclass(frozen=True)
class DataConfig:
    """``object_crops``: share of training crops centred on a labelled box, with some jitter
    (``boxes`` layout; 0 = uniform random crops). Small, rare objects then appear in many more
    crops, which the segmenter needs to learn them at all."""

    layout: Layout = "msrs"
    root: str = "data/synthetic"
    train_split: str = "train"
    test_split: str = "test"
    num_classes: int = 5
    class_names: tuple[str, ...] = ("background", "road", "person", "car", "bicycle")
    ignore_index: int = 255
    crop_size: int = 96
    batch_size: int = 4
    num_workers: int = 0
    on_bad_input: Literal["strict", "skip"] = "strict"
    object_crops: float = 0.0

    def check(self, prefix: str) -> None:
        _require(2 <= self.num_classes <= 256, f"{prefix}.num_classes", "an integer from 2 to 256", self.num_classes)
        _require(len(self.class_names) == self.num_classes, f"{prefix}.class_names",
                 f"a list of exactly num_classes={self.num_classes} names", list(self.class_names))
        _require(self.crop_size >= 0, f"{prefix}.crop_size", "0 (whole images) or a positive size", self.crop_size)
        _require(self.batch_size >= 1, f"{prefix}.batch_size", "an integer >= 1", self.batch_size)
        _require(self.num_workers >= 0, f"{prefix}.num_workers", "an integer >= 0", self.num_workers)
        _require(not 0 <= self.ignore_index < self.num_classes, f"{prefix}.ignore_index",
                 f"an id outside 0..{self.num_classes - 1}", self.ignore_index)
        _require(0.0 <= self.object_crops <= 1.0, f"{prefix}.object_crops",
                 "a share in [0, 1] of training crops centred on a box (0 = uniform crops)", self.object_crops)
        _require(self.object_crops == 0.0 or self.layout == "boxes", f"{prefix}.object_crops",
                 "0 unless data.layout is boxes (crops are centred on the labelled boxes)", self.object_crops)


@dataclass(frozen=True)
class SyntheticConfig:
    train: int = 48
    test: int = 12
    height: int = 128
    width: int = 128
    seed: int = 0

    def check(self, prefix: str) -> None:
        for name in ("train", "test"):
            _require(getattr(self, name) >= 1, f"{prefix}.{name}", "an integer >= 1", getattr(self, name))
        for name in ("height", "width"):
            _require(getattr(self, name) >= 32, f"{prefix}.{name}", "an integer >= 32", getattr(self, name))


@dataclass(frozen=True)
class SegmenterConfig:
    arch: str = "DeepLabV3Plus"
    encoder: str = "mobilenet_v2"
    encoder_weights: str | None = None


@dataclass(frozen=True)
class FusionModelConfig:
    name: str = "uaafusion"
    stages: int = 3
    features: int = 16
    inference_mask: Literal["average", "infrared"] = "average"
    inference_mode: Literal["fast", "exact"] = "fast"

    def check(self, prefix: str) -> None:
        _require(self.stages >= 1, f"{prefix}.stages", "an integer >= 1", self.stages)
        _require(self.features >= 4, f"{prefix}.features", "an integer >= 4", self.features)


@dataclass(frozen=True)
class ModelConfig:
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    fusion: FusionModelConfig = field(default_factory=FusionModelConfig)


@dataclass(frozen=True)
class AttributionConfig:
    steps: int = 4
    method: Literal["riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre"] = "riemann_right"
    internal_batch_size: int = 32
    engine: Literal["reverse", "forward", "captum"] = "reverse"
    scale: float = 1.0

    def check(self, prefix: str) -> None:
        _require(self.steps >= 2 or self.method == "gausslegendre", f"{prefix}.steps",
                 "an integer >= 2 (>= 1 with method gausslegendre)", self.steps)
        _require(self.steps >= 1, f"{prefix}.steps", "an integer >= 1", self.steps)
        _require(0.0 < self.scale <= 1.0, f"{prefix}.scale", "a number in (0, 1] (1 = full resolution)", self.scale)
        _require(self.internal_batch_size >= 1, f"{prefix}.internal_batch_size", "an integer >= 1",
                 self.internal_batch_size)


@dataclass(frozen=True)
class TrainConfig:
    schedule: Literal["alternating", "joint"] = "alternating"
    rounds: int = 2
    pretrain_epochs: int = 4
    fusion_epochs: int = 2
    segmentation_epochs: int = 1
    joint_epochs: int = 4
    lr_fusion: float = 1e-3
    lr_segmenter: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0
    amp: bool = False
    retries: int = 1
    init_from: str | None = None
    distributed_timeout_s: float = 1800.0  # several processes: how long one waits for the others, then fails

    def check(self, prefix: str) -> None:
        for name in ("rounds", "pretrain_epochs", "fusion_epochs", "segmentation_epochs", "joint_epochs", "retries"):
            _require(getattr(self, name) >= 0, f"{prefix}.{name}", "an integer >= 0", getattr(self, name))
        _require(self.distributed_timeout_s > 0, f"{prefix}.distributed_timeout_s", "seconds > 0", self.distributed_timeout_s)
        for name in ("lr_fusion", "lr_segmenter"):
            _require(getattr(self, name) > 0, f"{prefix}.{name}", "a positive number", getattr(self, name))
        _require(self.weight_decay >= 0, f"{prefix}.weight_decay", "a number >= 0", self.weight_decay)
        _require(self.grad_clip >= 0, f"{prefix}.grad_clip", "a number >= 0 (0 = off)", self.grad_clip)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms. ``class_balance``: exponent ``p`` of the segmentation
    cross-entropy's class weights ``w_c`` proportional to ``f_c ** -p`` (``f_c``: class ``c``'s share of
    the labelled training pixels; 0 = plain cross-entropy); it lifts rare classes (people,
    bicycles) that a segmenter would otherwise never predict."""

    intensity: float = 1.0
    gradient: float = 1.0
    segmentation: float = 0.1
    dice: float = 0.0
    roi: float = 0.0
    class_balance: float = 0.0
    mask: float = 0.5  # mask_guided's mask against its pseudo ground truth (docs/method.md)
    mask_target: Literal["max", "weighted"] = "max"
    degradation: float = 0.1  # prompt's degradation classifier: cross-entropy on the kinds given in training

    def check(self, prefix: str) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float):
                _require(value >= 0, f"{prefix}.{item.name}", "a weight >= 0", value)
        _require(self.class_balance <= 1.0, f"{prefix}.class_balance",
                 "an exponent in [0, 1] (0 = plain cross-entropy, 0.5 = 1/sqrt(frequency), 1 = 1/frequency)",
                 self.class_balance)


@dataclass(frozen=True)
class DegradeConfig:
    """Degradation-aware training (docs/degradations.md): each training crop is degraded with
    ``probability`` by one of ``kinds`` (drawn uniformly) at a severity drawn uniformly from
    ``severity = [low, high]``; the fusion losses compare with the clean crop. ``kinds: []`` = off."""

    kinds: tuple[str, ...] = ()
    probability: float = 0.5
    severity: tuple[float, ...] = (0.3, 0.8)

    def check(self, prefix: str) -> None:
        _check_degradation_kinds(self.kinds, f"{prefix}.kinds")
        _require(0.0 <= self.probability <= 1.0, f"{prefix}.probability", "a probability in [0, 1]",
                 self.probability)
        _require(len(self.severity) == 2 and 0.0 <= self.severity[0] <= self.severity[1] <= 1.0,
                 f"{prefix}.severity", "[low, high] with 0 <= low <= high <= 1", list(self.severity))


@dataclass(frozen=True)
class DegradedBenchmarkConfig:
    """The degraded test sets: the test split degraded by each of ``kinds`` at one ``severity`` and
    ``seed`` (written under ``root``, one folder per kind, by ``uaafusion prepare --degraded``), fused
    and scored against the clean sources. ``compare_with``: name -> checkpoint of another trained
    model fused and scored on the same sets (e.g. the clean-trained model); ``baselines``: the pixel
    baselines too; ``pairs``: degrade only that many test pairs, spread evenly over the split (0 = all)."""

    kinds: tuple[str, ...] = ()
    severity: float = 0.5
    seed: int = 0
    root: str = "data/degraded"
    compare_with: dict[str, str] = field(default_factory=dict)
    baselines: bool = True
    pairs: int = 0

    def check(self, prefix: str) -> None:
        _check_degradation_kinds(self.kinds, f"{prefix}.kinds")
        _require(0.0 <= self.severity <= 1.0, f"{prefix}.severity", "a number in [0, 1]", self.severity)
        _require(bool(self.root.strip()), f"{prefix}.root", "a non-empty folder path", self.root)
        _require(self.pairs >= 0, f"{prefix}.pairs", "0 (every test pair) or a positive count", self.pairs)
        _require(not set(self.compare_with) & set(PIPELINE_METHODS), f"{prefix}.compare_with",
                 f"model names other than {', '.join(PIPELINE_METHODS)} (the methods fused anyway)",
                 self.compare_with)


def _check_degradation_kinds(kinds: Sequence[str], key: str) -> None:
    if kinds:
        from uaafusion.data.degrade import check_kinds

        check_kinds(kinds, key)


@dataclass(frozen=True)
class EvaluateConfig:
    """``peers``: name -> folder of another method's fused test images (scored like ours).
    ``generalisation``: name -> folder with ``ir/`` and ``vi/`` (unlabeled pairs) fused with the trained
    model and scored with the fusion metrics. ``degraded``: the degraded benchmark."""

    peers: dict[str, str] = field(default_factory=dict)
    generalisation: dict[str, str] = field(default_factory=dict)
    degraded: DegradedBenchmarkConfig = field(default_factory=DegradedBenchmarkConfig)


@dataclass(frozen=True)
class ReportConfig:
    """``samples``: test images shown as panels. ``discussion``: optional Markdown file (relative
    to the project root) added to the report as its "Discussion" section: what the numbers mean,
    written by whoever ran the preset; it survives every regeneration of the report."""

    samples: int = 4
    discussion: str | None = None

    def check(self, prefix: str) -> None:
        _require(self.samples >= 0, f"{prefix}.samples", "an integer >= 0", self.samples)
        _require(self.discussion is None or (isinstance(self.discussion, str) and self.discussion.strip() != ""),
                 f"{prefix}.discussion", "null or the path of a Markdown file", self.discussion)


CHAMPION_GOALS = ("max", "min")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow's registered model ``uaafusion``: its alias ``champion`` moves to a new version only when
    that run's ``champion_metric`` (a metric of the parent run, e.g. ``validation_VIF``, the last
    round's validation VIF, or ``validation_mIoU``) beats the current champion's in the direction of
    ``champion_goal``."""

    champion_metric: str = "validation_VIF"
    champion_goal: str = "max"
    offline_ok: bool = False
    """True: training starts even when the MLflow server does not answer; what it logs is journaled in
    the run folder and sent when the server answers (:mod:`uaafusion.tracking_journal`)."""

    def check(self, prefix: str) -> None:
        _require(isinstance(self.champion_metric, str) and self.champion_metric.strip() != "",
                 f"{prefix}.champion_metric", "a metric name of the parent run, e.g. validation_VIF",
                 self.champion_metric)
        _require(self.champion_goal in CHAMPION_GOALS, f"{prefix}.champion_goal", " or ".join(CHAMPION_GOALS),
                 self.champion_goal)


@dataclass(frozen=True)
class OutputsConfig:
    """Where the pipeline writes, relative to the project root (or absolute).

    A preset that trains on other data sets its own folders so that its results never overwrite
    the default run's (``dvc.yaml`` tracks the defaults).
    """

    models: str = "models"
    fused: str = "data/fused"
    reports: str = "reports"

    def check(self, prefix: str) -> None:
        for name in ("models", "fused", "reports"):
            _require(bool(getattr(self, name).strip()), f"{prefix}.{name}", "a non-empty folder path",
                     getattr(self, name))


@dataclass(frozen=True)
class Params:
    """The whole of ``params.yaml``."""

    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)

    def check(self, prefix: str) -> None:
        device = self.device.lower()
        allowed = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
        _require(allowed, "device", "auto, cpu, cuda or cuda:N", self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), as it would appear in ``params.yaml``."""
        return _plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """``{"train.rounds": 2, ...}``: every leaf under its dotted key (for MLflow params)."""
        return flatten(self.to_dict())


def flatten(nested: dict[str, Any]) -> dict[str, Any]:
    """``{"train": {"rounds": 2}}`` -> ``{"train.rounds": 2}`` (an empty mapping stays a leaf)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk("", nested)
    return flat


EXTENDS_KEY = "extends"
"""Top-level key of a preset: the params file (relative to the preset) whose values it overrides."""


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file; ``overrides`` maps dotted keys to values (``{"train.rounds": 1}``).

    A file with ``extends: ../params.yaml`` holds only what differs from that file: its mappings merge
    into the base's key by key, any other value (lists included) replaces the base's.
    """
    path = Path(path)
    raw, chain = _read_extended(path, ())
    source = str(path) if len(chain) == 1 else f"{path} (extending {', '.join(str(item) for item in chain[1:])})"
    return params_from_dict(raw, overrides, source=source)


def _read_extended(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """``(merged mapping, (path, base, base's base, ...))`` of a params file and what it extends."""
    user = f" (named by {EXTENDS_KEY} in {seen[-1]})" if seen else ""
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found{user}. Run from the project root or pass --params.")
    if path.resolve() in (item.resolve() for item in seen):
        raise ConfigError(f"{path}: {EXTENDS_KEY} loops back to a file it extends ({' -> '.join(map(str, seen))}).")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error}).") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level.")
    if EXTENDS_KEY not in raw:
        return raw, (path,)
    base_name = raw.pop(EXTENDS_KEY)
    if not isinstance(base_name, str) or not base_name.strip():
        raise ConfigError(f"{path}: {EXTENDS_KEY} = {base_name!r}; expected the path of a params file, relative to "
                          f"{path.parent} (e.g. ../params.yaml).")
    base, chain = _read_extended(path.parent / base_name, (*seen, path))
    return _merged(base, raw), (path, *chain)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else replaces."""
    merged = _deep_copy(base)
    for key, value in override.items():
        section = merged.get(key)
        merged[key] = _merged(section, value) if isinstance(section, dict) and isinstance(value, dict) else _deep_copy(value)
    return merged


def parse_overrides(assignments: Sequence[str]) -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` strings (``-S train.rounds=1``) -> ``{"train.rounds": 1}``; values are
    read as YAML scalars/lists. Raises :class:`ConfigError` naming an item without ``=``."""
    overrides: dict[str, Any] = {}
    for item in assignments:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"-S/--set expects KEY=VALUE (e.g. train.rounds=1), got {item!r}.")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"-S {item!r}: the value is not valid YAML ({error}).") from error
    return overrides


def params_from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "params") -> Params:
    """Validate a nested dict (as read from YAML) into :class:`Params`, applying dotted ``overrides``."""
    merged = _deep_copy(raw)
    for dotted_key, value in (overrides or {}).items():
        _set_dotted(merged, dotted_key, value, source)
    return _build(Params, merged, "", source)


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{prefix or 'top level'}' must be a mapping, got {type(raw).__name__}.")
    hints = typing.get_type_hints(cls)
    known = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(where + str(key) for key in unknown)}; "
            f"allowed keys{' in ' + prefix if prefix else ''}: {', '.join(sorted(known))}."
        )
    values: dict[str, Any] = {}
    for name in known:
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            values[name] = _coerce(hints[name], raw[name], key, source)
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        try:
            check(prefix)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    return instance


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if origin is Literal:
        if value not in arguments:
            raise ConfigError(f"{source}: {key} = {value!r} is not allowed; allowed values: {', '.join(map(str, arguments))}.")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        inner = [argument for argument in arguments if argument is not type(None)]
        return _coerce(inner[0], value, key, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}.")
        return tuple(_coerce(arguments[0], item, f"{key}[{index}]", source) for index, item in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}.")
        return {str(item_key): _coerce(arguments[1], item, f"{key}.{item_key}", source) for item_key, item in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}.")
        return value
    return value


def _require(condition: bool, key: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key} = {value!r} is not allowed; expected {allowed}.")


def _set_dotted(raw: dict[str, Any], dotted_key: str, value: Any, source: str) -> None:
    parts = dotted_key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: override {dotted_key}: '{part}' is not a section.")
        node = child
    node[parts[-1]] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
