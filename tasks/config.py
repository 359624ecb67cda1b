"""The pipeline's one typed configuration (loadable from YAML, overridable from the CLI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fpgaflow.fpga_runtime.numerics import FORMATS
from fpgaflow.fpga_runtime.service import check_name

DETECTOR_FEATURIZERS = ("ssd_vgg",)
FEATURIZERS = ("resnet50", "resnet152", "densenet121", "vgg16", *DETECTOR_FEATURIZERS)
STEPS = ("validate", "train", "package", "deploy")
SSD_INPUT_SIZE = 300
SSD_TRAINING_DEFAULTS = {"optimizer": "adam", "learning_rate": 1e-3}
TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,249}")
RESERVED_TAG_PREFIX = "fpgaflow."


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["head", "full"] = Field(
        default="head", description="'head': train on cached features; 'full': also unfreeze the last blocks."
    )
    unfreeze_blocks: int = Field(default=1, ge=0, description="Blocks of the featurizer trained end to end in 'full' mode.")
    hidden_units: int = Field(default=1024, ge=0, description="Units of the hidden dense layer; 0 = a linear head.")
    dropout: float = Field(default=0.2, ge=0, lt=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(default=1e-2, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    epochs: int = Field(default=16, ge=1)
    batch_size: int = Field(default=32, ge=1)
    early_stopping_patience: int = Field(
        default=4, ge=0, description="Epochs without validation-loss improvement before stopping; 0 disables."
    )
    featurize_batch_size: int = Field(default=32, ge=1)


# -- detection (featurizer ssd_vgg): detector geometry, SSD loss, decoding and NMS of the CPU stage --------
class DetectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature_maps: int | None = Field(
        default=None,
        ge=1,
        le=6,
        description="SSD feature maps used, from conv4_3 on; empty = as many as the input size has room for (6 at 300 px).",
    )
    width: float = Field(default=1.0, gt=0, le=4, description="Channel multiplier of every convolution; 1.0 = SSD300's channels.")
    match_iou: float = Field(
        default=0.5, gt=0, le=1, description="IoU from which a default box counts as matched to an object in training."
    )
    negative_ratio: float = Field(
        default=3.0, ge=0, description="Hard negatives per positive default box in the confidence loss."
    )
    loc_weight: float = Field(default=1.0, ge=0, description="Weight of the localisation loss against the confidence loss.")
    score_threshold: float = Field(default=0.01, gt=0, lt=1, description="Class scores at or below this are never detections.")
    iou_threshold: float = Field(
        default=0.45,
        gt=0,
        le=1,
        description="Non-maximum suppression drops a box overlapping a better one of its class by more than this IoU.",
    )
    max_per_class: int = Field(default=100, ge=1, description="Detections kept per class and image by non-maximum suppression.")
    max_detections: int = Field(default=100, ge=1, description="Detections returned per image (K of the outputs [N, K, ...]).")


class PipelineConfig(BaseModel):
    """Everything a pipeline run needs besides the settings; every field has a default."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    model_name: str = Field(default="", description="Registered model name; empty = the data folder's name.")
    featurizer: Literal[FEATURIZERS] = "resnet50"  # type: ignore[valid-type]
    weights: str = Field(
        default="imagenet",
        description="'imagenet' (downloaded and verified once, see `fpgaflow weights`), 'auto' (ImageNet when it can "
        "be had, else seeded random init, said so), 'none' (seeded random init) or a weights file path.",
    )
    classifier: Literal["trained", "imagenet"] = Field(
        default="trained",
        description="'trained': a head trained on the labelled data; 'imagenet': the featurizer's own Keras ImageNet "
        "top (1,000 classes, nothing trained; the data is a folder of unlabelled calibration images).",
    )
    input_size: int = Field(default=224, ge=32, description="Square input side; the original service used 224.")
    seed: int = 0
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Used with featurizer ssd_vgg.")
    numerics: tuple[str, ...] = Field(default=("fp32", "int8", "msfp8", "msfp9"), description="Numeric formats to evaluate.")
    serve_format: str = Field(
        default="auto",
        description="Format to package and deploy; 'auto' = of the formats that passed their gate, the one with the "
        "lowest modelled latency on device_profile ('cpu': the one fastest measured on this CPU).",
    )
    device_profile: str = Field(
        default="",
        description="Device profile 'auto' chooses the serve format for: a profile name or YAML path, or 'cpu'; "
        "empty = the device_profile setting (the profile nodes emulate).",
    )
    msfp_block_size: int = Field(default=16, ge=1, description="Values sharing one exponent in msfp8/msfp9.")
    max_accuracy_drop: float | dict[str, float] | None = Field(
        default=None,
        description="Largest top-1 drop vs fp32 a format may show (fraction): one for every format, or per format "
        "({msfp8: 0.02}); None = the max_accuracy_drop_by_format and max_accuracy_drop settings.",
    )
    target: Literal["local", "docker", "kubernetes"] = "local"
    replicas: int = Field(default=1, ge=1)
    base_image: str = Field(default="", description="Base image of the serving image; empty = the image_base setting.")
    until: Literal[STEPS] = "deploy"  # type: ignore[valid-type]
    tags: dict[str, str] = Field(
        default_factory=dict, description="Labels set as tags on the registered model version (`--tag KEY=VALUE`)."
    )
    description: str = Field(default="", description="What the model version is, shown first in its model card.")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(value).expanduser().resolve()

    @field_validator("max_accuracy_drop")
    @classmethod
    def _fractions_of_known_formats(cls, value: float | dict[str, float] | None) -> float | dict[str, float] | None:
        limits = value if isinstance(value, dict) else {} if value is None else {"every format": value}
        unknown = [name for name in limits if name not in FORMATS and name != "every format"]
        if unknown:
            raise ValueError(f"unknown numeric formats {unknown}; known formats: {', '.join(FORMATS)}")
        bad = {name: limit for name, limit in limits.items() if not 0 <= limit <= 1}
        if bad:
            raise ValueError(f"an allowed drop is a fraction between 0 and 1, got {bad}")
        return value

    @field_validator("tags")
    @classmethod
    def _user_tag_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not TAG_KEY.fullmatch(key):
                raise ValueError(
                    f"tag key {key!r}: use letters, digits and _ - . / (at most 250 characters), starting with a letter or digit"
                )
            if key.startswith(RESERVED_TAG_PREFIX):
                raise ValueError(f"tag key {key!r}: keys starting with {RESERVED_TAG_PREFIX!r} are fpgaflow's own")
        return value

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, value: str) -> str:
        return check_name(value, "model name") if value else value

    @model_validator(mode="after")
    def _detector_defaults(self) -> PipelineConfig:
        """ssd_vgg is SSD300: input size 300 instead of the classifiers' 224, and Adam at 1e-3 unless the
        training section says otherwise (the classifier heads' SGD at 1e-2 moves the SSD layers too slowly)."""
        if not self.detects:
            return self
        if "input_size" not in self.model_fields_set:
            self.input_size = SSD_INPUT_SIZE
        for name, value in SSD_TRAINING_DEFAULTS.items():
            if name not in self.training.model_fields_set:
                setattr(self.training, name, value)
        return self

    @model_validator(mode="after")
    def _imagenet_classifier_needs_imagenet_weights(self) -> PipelineConfig:
        if self.classifier == "imagenet" and (self.detects or self.weights != "imagenet"):
            raise ValueError(
                f"classifier 'imagenet' is a classification featurizer's ImageNet top: it needs weights 'imagenet' "
                f"and one of {', '.join(f for f in FEATURIZERS if f not in DETECTOR_FEATURIZERS)}, "
                f"not {self.featurizer} with weights {self.weights!r}"
            )
        return self

    @property
    def imagenet_top(self) -> bool:
        """True for the ImageNet classifier (the featurizer's Keras top, no head trained)."""
        return self.classifier == "imagenet"

    @property
    def detects(self) -> bool:
        """True for a detector (ssd_vgg), False for a classifier."""
        return self.featurizer in DETECTOR_FEATURIZERS

    @property
    def resolved_model_name(self) -> str:
        return self.model_name or check_name(self.data_dir.name.replace(" ", "-"), "model name")


def load_config(path: Path | None, **overrides) -> PipelineConfig:
    """YAML file (optional) + overrides (None values ignored; dotted keys such as 'training.epochs' nest)."""
    raw: dict = yaml.safe_load(Path(path).read_text()) if path else {}
    raw = raw or {}
    for key, value in overrides.items():
        if value is None:
            continue
        *sections, name = key.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return PipelineConfig.model_validate(raw)
