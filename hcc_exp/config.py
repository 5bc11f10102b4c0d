"""Typed configuration of an experiment: the package's defaults, overridden by a YAML file and ``--set``.

Every default lives here, in the typed sections, so every command runs from any
folder without a config file. A ``params.yaml`` in the working folder (or the file
given with ``--config``) overrides the keys it names; the project's own
``params.yaml`` holds what the DVC pipeline pins. Every command, the DVC pipeline and
every sweep trial build one :class:`ExperimentConfig` and pass its sections down; no
function reads a global dict. Overrides use dotted keys (``--set optim.lr=3e-4``,
sweep parameters); an unknown key, and an impossible value (a spacing of 0, a crop of
0 voxels, percentiles out of order...), is refused naming the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hcc_exp.errors import ConfigError
from hcc_exp.vocabulary import PHASES

RoiStrategy = Literal["full", "tumour", "tumour_margin", "liver", "none"]
PoolingStrategy = Literal["global", "regions"]
LossWeighting = Literal["dwa", "static", "uncertainty"]

PARAMS_FILE = "params.yaml"
"""The config file read from the working folder when no ``--config`` is given (if it exists)."""

PositiveMm = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A length in mm: finite and > 0."""
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveDays = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the cohort and the preprocessed cache live (relative paths: to the working folder).

    The defaults are the project's layout: ``data/raw`` (the embedded synthetic cohort,
    tracked by ``data.dvc``) and ``data/preprocessed`` (the DVC ``preprocess`` stage's output).
    """

    cohort_dir: Path = Path("data/raw")
    cache_dir: Path = Path("data/preprocessed")


class SynthConfig(_Section):
    """The embedded synthetic cohort written by ``hcc-exp demo``: 388 patients as the paper (192 / 116 / 80)."""

    patients: int = Field(388, ge=6)
    seed: int = 7


class PreprocessConfig(_Section):
    """The paper's preprocessing recipe (Methods, Imaging annotation and preprocessing).

    Attributes:
        spacing_mm: target voxel spacing (z, y, x) in mm; the paper uses 1 mm isotropic.
        image_interpolator: SimpleITK interpolator for CT (masks always use nearest neighbour).
        antialias: low-pass the CT along every axis that is downsampled before resampling
            (Gaussian, ``sigma = (target / source - 1) / 2`` source voxels, the rule of
            ``skimage.transform.resize``): without it the target voxels sample the source
            noise instead of averaging it, so image noise, and every texture feature, depends
            on the source scanner's pixel size and noise.
        clip_percentiles: lower and upper intensity percentiles (paper: 2.5 / 97.5) clipped
            before min-max scaling to [0, 1]; computed inside the liver when ``clip_within_liver``.
        margin_mm: width of the peritumoral band centred on the tumour boundary
            (paper: 4 mm = 2 mm inside + 2 mm outside), clipped to the liver.
        crop_size_vox: fixed (z, y, x) box in voxels centred on the tumour centroid.
        dtype: storage type of the image array.
        workers: parallel processes (one patient each).
    """

    spacing_mm: tuple[PositiveMm, PositiveMm, PositiveMm] = (2.0, 2.0, 2.0)
    image_interpolator: Literal["bspline", "linear"] = "linear"
    antialias: bool = True
    clip_percentiles: tuple[float, float] = (2.5, 97.5)
    clip_within_liver: bool = True
    margin_mm: float = Field(4.0, gt=0, allow_inf_nan=False)
    crop_size_vox: tuple[PositiveInt, PositiveInt, PositiveInt] = (48, 48, 48)
    dtype: Literal["float16", "float32"] = "float16"
    workers: int = Field(2, ge=1)

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError("clip_percentiles must satisfy 0 <= low < high <= 100")
        return v

    def recipe(self) -> dict[str, Any]:
        """The parameters that change the preprocessed arrays (JSON types): all but ``workers``."""
        return self.model_dump(mode="json", exclude={"workers"})

    def params_hash(self) -> str:
        """Hash of :meth:`recipe`."""
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Trains on 2 CPU cores in minutes at 2 mm / 48^3.
    "tiny": {
        "stem_channels": 8,
        "init_features": 16,
        "growth_rate": 8,
        "block_config": (2, 2, 2),
        "bn_size": 2,
        "dropout": 0.2,
    },
    # DenseNet121-like growth and blocks, for a GPU at 1 mm.
    "paper": {
        "stem_channels": 16,
        "init_features": 64,
        "growth_rate": 32,
        "block_config": (6, 12, 24, 16),
        "bn_size": 4,
        "dropout": 0.3,
    },
}


class ModelConfig(_Section):
    """Architecture of the multi-task network.

    Architecture fields left at ``None`` come from ``preset`` (see :data:`MODEL_PRESETS`).
    ``pooling`` reduces the last feature map per ROI region (``regions``) or over the whole
    crop (``global``, the paper's DenseNet); see :mod:`hcc_exp.models.backbone`.
    ``formulation`` chooses how the same network is computed: ``fast`` (default) or
    ``reference``, the operators of commit fd7cd16 (kept for the equality tests and the
    ``step`` benchmark); both give the same outputs for the same weights.
    """

    preset: Literal["tiny", "paper"] = "tiny"
    dims: Literal["3d", "2d"] = "3d"
    pooling: PoolingStrategy = "regions"
    formulation: Literal["fast", "reference"] = "fast"
    stem_channels: PositiveInt | None = None
    init_features: PositiveInt | None = None
    growth_rate: PositiveInt | None = None
    block_config: tuple[PositiveInt, ...] | None = Field(None, min_length=1)
    bn_size: PositiveInt | None = None
    dropout: float | None = Field(None, ge=0, lt=1)

    def resolved(self) -> ModelConfig:
        """A copy with every architecture field filled from the preset."""
        values = self.model_dump()
        for key, default in MODEL_PRESETS[self.preset].items():
            if values[key] is None:
                values[key] = default
        return ModelConfig(**values)


class LossConfig(_Section):
    """How the OS, RFS and MVI losses are combined.

    Attributes:
        weighting: ``dwa`` (Liu et al. 2019), ``static`` or ``uncertainty`` (Kendall et al. 2018).
        dwa_temperature: T of DWA (paper: 2.0).
        static_weights: (OS, RFS, MVI) weights for ``static``.
        mvi_class_weights: optional cross-entropy class weights (no MVI, MVI).
    """

    weighting: LossWeighting = "dwa"
    dwa_temperature: float = Field(2.0, gt=0)
    static_weights: tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (1.0, 1.0, 1.0)
    mvi_class_weights: tuple[PositiveFloat, PositiveFloat] | None = None

    @field_validator("static_weights")
    @classmethod
    def _some_weight(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not any(v):
            raise ValueError("static_weights must give at least one task a weight > 0")
        return v


class MomentumConfig(_Section):
    """TorchSurv-style momentum memory bank for the Cox losses (names follow ``torchsurv.loss.momentum``).

    Attributes:
        enabled: use the memory bank; off trains plain per-batch Cox losses.
        steps: number of past batches kept in the memory bank.
        rate: momentum m of the target network update theta_t = m * theta_t + (1 - m) * theta_o.
    """

    enabled: bool = True
    steps: int = Field(4, ge=1)
    rate: float = Field(0.99, ge=0, le=1)


class AugmentConfig(_Section):
    """Training-time augmentation (paper: random 3D rotation and +-3 day time jitter)."""

    rotation: bool = True
    rotation_range_deg: float = Field(15.0, ge=0, le=180)
    time_jitter_days: int = Field(3, ge=0)


LrSchedule = Literal["constant", "warmup_cosine", "onecycle"]
Monitor = Literal["val/loss", "val/os_c_index", "val/rfs_c_index"]


class OptimConfig(_Section):
    """AdamW settings and the learning-rate schedule (stepped every optimiser step).

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        schedule: ``constant`` (commit fd7cd16 and earlier), ``warmup_cosine`` (linear warm-up
            from ``lr / 100`` over ``warmup_epochs``, then cosine decay to ``min_lr_ratio * lr``
            at ``trainer.max_epochs``) or ``onecycle`` (torch's ``OneCycleLR``, cosine
            annealing, warm-up share ``warmup_epochs / max_epochs``).
        warmup_epochs: length of the warm-up in epochs (fractions allowed).
        min_lr_ratio: final learning rate of ``warmup_cosine`` over ``lr``.
    """

    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    schedule: LrSchedule = "constant"
    warmup_epochs: float = Field(1.0, ge=0, allow_inf_nan=False)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)


class TrainerConfig(_Section):
    """Lightning trainer settings (paper: 80 epochs, early stopping patience 20).

    Attributes:
        monitor: the validation (internal split) metric that picks the best checkpoint and
            drives early stopping: ``val/loss`` (the paper's; minimised) or a ranking metric,
            ``val/os_c_index`` / ``val/rfs_c_index`` (maximised).
        precision: Lightning's precision plugin; ``bf16-mixed`` runs the network under bf16
            autocast on CPU and GPU, the heads, losses and the Cox risk set in float32.
    """

    max_epochs: int = Field(30, ge=1)
    patience: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=2)
    num_workers: int = Field(0, ge=0)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["32", "16-mixed", "bf16-mixed"] = "32"
    limit_train_batches: PositiveInt | Annotated[float, Field(gt=0, le=1)] | None = None
    monitor: Monitor = "val/loss"

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        """``min`` for a loss, ``max`` for a C-index."""
        return "min" if self.monitor.endswith("loss") else "max"


class EvaluationConfig(_Section):
    """Statistics settings of ``hcc-exp evaluate``."""

    horizons_days: tuple[PositiveDays, ...] = Field((365, 730), min_length=1)
    bootstrap_resamples: int = Field(1000, ge=10)
    km_truncate_days: PositiveDays = 1826
    seed: int = 0


class TrackingConfig(_Section):
    """Where and how runs are logged."""

    runs_dir: Path = Path("runs")
    wandb: bool = True
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "hcc-exp"


class ExperimentConfig(_Section):
    """Everything one training run needs. Built by :func:`load_config`."""

    seed: int = 42
    phases: tuple[str, ...] = PHASES
    roi: RoiStrategy = "full"
    augment_copies: int = Field(3, ge=1)
    data: DataConfig = DataConfig()
    synth: SynthConfig = SynthConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    momentum: MomentumConfig = MomentumConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _check_phases(self) -> ExperimentConfig:
        if not self.phases:
            raise ValueError("phases must name at least one of " + ", ".join(PHASES))
        unknown = [p for p in self.phases if p not in PHASES]
        if unknown:
            raise ValueError(f"unknown phase(s) {unknown}; valid: {list(PHASES)}")
        if len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases repeat: {list(self.phases)}")
        # Keep the canonical channel order so checkpoints and caches agree.
        object.__setattr__(self, "phases", tuple(p for p in PHASES if p in self.phases))
        return self

    def to_flat_dict(self) -> dict[str, Any]:
        """The config as ``{dotted.key: value}`` (JSON types), e.g. for W&B."""
        return flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- helpers
def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def valid_keys() -> list[str]:
    """Every dotted key an override or a sweep parameter may name."""
    return sorted(flatten(ExperimentConfig().model_dump(mode="json")).keys())


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key ``overrides`` set.

    Raises:
        ConfigError: an override names a key that does not exist.
    """
    keys = set(valid_keys())
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        if dotted not in keys:
            raise ConfigError(
                f"unknown config key '{dotted}'. Valid keys: " + ", ".join(sorted(keys))
            )
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{dotted}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Parse CLI ``--set key=value`` items; values are read as YAML (``1e-3``, ``[a, b]``, ``true``)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value '{text}': {exc}") from exc
    return overrides


def build_config(raw: dict[str, Any], overrides: dict[str, Any] | None = None, *, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping (plus overrides) into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: unknown keys or wrong types, each naming the key.
    """
    merged = apply_overrides(raw or {}, overrides or {})
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {source}: {problems}") from exc


def read_yaml(path: Path | str, *, kind: str = "config file", mapping: bool = True) -> Any:
    """Parse a YAML file (config, sweep, mapping); the one YAML reader of the package's config files.

    Args:
        path: the file.
        kind: what the file is, for the messages ("config file", "sweep file").
        mapping: require a mapping at the top level (an empty file reads as ``{}``).

    Raises:
        ConfigError: the file does not exist, is not valid YAML, or is not a mapping (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason})") from exc
    if mapping:
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def default_config_path() -> Path | None:
    """``./params.yaml`` when the working folder has one, else None (the package defaults)."""
    candidate = Path.cwd() / PARAMS_FILE
    return candidate if candidate.is_file() else None


def load_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Build the experiment config: package defaults, then a YAML file, then dotted ``overrides``.

    Args:
        path: the YAML file to read (it must exist); None reads ``params.yaml`` from the
            working folder when there is one and otherwise starts from the defaults alone.
        overrides: dotted keys (``{"optim.lr": 3e-4}``) applied last.

    Raises:
        ConfigError: a file that does not exist or does not parse, an unknown key, or an
            impossible value, each naming the file and the key.
    """
    if path is None:
        path = default_config_path()
    raw: dict[str, Any] = {} if path is None else read_yaml(path)
    return build_config(raw, overrides, source=str(path) if path is not None else "config")
