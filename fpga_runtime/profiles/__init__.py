"""Device profiles: what an emulated FPGA has, as data (one YAML file per part in this folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fpgaflow.fpga_runtime.errors import InvalidInput

PROFILE_SUFFIX = ".yaml"


class DeviceProfile(BaseModel):
    """One FPGA part with the neural processor built on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str
    onchip_memory_bytes: int = Field(gt=0, description="On-chip memory that holds the model's weights.")
    mac_units: dict[str, int] = Field(description="Multiply-accumulate units per numeric format (narrow formats pack more).")
    vector_lanes: int = Field(gt=0, description="Elementwise or pooling operations per cycle.")
    clock_hz: float = Field(gt=0)
    host_link_bytes_per_second: float = Field(gt=0, description="Host link (PCIe) bandwidth for inputs and outputs.")
    efficiency: float = Field(gt=0, le=1, description="Share of the peak MAC rate sustained at batch 1.")
    supported_formats: tuple[str, ...] = Field(min_length=1)
    source: str = Field(min_length=1, description="Where each number comes from.")

    @model_validator(mode="after")
    def _formats_have_mac_units(self) -> DeviceProfile:
        missing = [name for name in self.supported_formats if name not in self.mac_units]
        if missing:
            raise ValueError(f"supported formats {missing} have no entry in mac_units")
        bad = {name: count for name, count in self.mac_units.items() if count <= 0}
        if bad:
            raise ValueError(f"mac_units must be positive: {bad}")
        return self

    def macs_per_cycle(self, numeric_format: str) -> int:
        self.require_format(numeric_format)
        return self.mac_units[numeric_format]

    def require_format(self, numeric_format: str) -> None:
        if numeric_format not in self.supported_formats:
            raise InvalidInput(
                f"device {self.name} does not support numeric format {numeric_format!r}; "
                f"it supports {', '.join(self.supported_formats)}"
            )


def _bundled() -> dict[str, Path]:
    folder = resources.files(__package__)
    return {
        entry.name.removesuffix(PROFILE_SUFFIX): Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(PROFILE_SUFFIX)
    }


def known_profiles() -> list[str]:
    """Names of the profiles shipped with fpgaflow."""
    return sorted(_bundled())


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A bundled profile by name (``arria10``, ``stratix10``) or any profile YAML by path."""
    bundled = _bundled()
    if isinstance(name_or_path, str) and name_or_path in bundled:
        path = bundled[name_or_path]
    else:
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            raise InvalidInput(
                f"unknown device profile {str(name_or_path)!r}: known profiles are {', '.join(known_profiles())}, "
                "or give the path of a profile .yaml file"
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InvalidInput(f"device profile {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"device profile {path} must be a mapping of fields, got {type(raw).__name__}")
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}" for item in error.errors()
        )
        raise InvalidInput(f"device profile {path} is invalid: {problems}") from None
