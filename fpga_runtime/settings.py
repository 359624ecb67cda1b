"""The one settings object of fpgaflow.

Every default the project uses lives here, each field documented. Values come from
``FPGAFLOW_<FIELD>`` environment variables (``FPGAFLOW_HOME``, ``FPGAFLOW_MIN_IMAGE_WIDTH`` ...)
or from the keyword arguments of :class:`Settings`. Nothing else in the code base reads
``os.environ`` for configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FPGAFLOW_", extra="ignore")

    # -- where things go -------------------------------------------------------------------
    home: Path = Field(
        default=Path("~/.fpgaflow"),
        description="Project home: everything fpgaflow writes by default goes below it.",
    )
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty means SQLite inside the home directory.",
    )

    # -- data intake (validation thresholds) ---------------------------------------------
    min_image_width: int = Field(default=16, ge=1, description="Smallest accepted image width, pixels.")
    min_image_height: int = Field(default=16, ge=1, description="Smallest accepted image height, pixels.")
    allowed_formats: tuple[str, ...] = Field(
        default=("JPEG", "PNG", "BMP"), description="Image formats (Pillow names) accepted by intake."
    )
    min_classes: int = Field(default=2, ge=2, description="Fewest classes a dataset may have.")
    min_images_per_class: int = Field(default=10, ge=1, description="Fewest images any class may have.")
    max_class_imbalance: float = Field(
        default=10.0, ge=1.0, description="Largest allowed ratio of biggest to smallest class size."
    )
    unreadable_policy: str = Field(
        default="fail",
        pattern="^(fail|skip)$",
        description="'fail' stops on undecodable or empty files; 'skip' excludes them loudly and goes on.",
    )
    validation_fraction: float = Field(default=0.15, gt=0, lt=0.5, description="Share of each class for validation.")
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5, description="Share of each class for the test split.")
    split_seed: int = Field(default=0, description="Seed of the stratified train/validation/test split.")

    # -- emulated FPGA device and onnxruntime sessions -----------------------------------
    ort_intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="Threads per onnxruntime session (CPU stages and the emulated device); 0 lets onnxruntime choose.",
    )
    device_profile: str = Field(
        default="arria10",
        description="Device profile a node emulates: a bundled profile name (arria10, stratix10) or a YAML path.",
    )

    # -- image build (serving image, Docker engine) --------------------------------------
    docker_host: str = Field(
        default="",
        description="Docker engine address (unix:///path.sock, tcp://host:port); empty = the docker SDK's "
        "default (DOCKER_HOST or the local socket).",
    )
    docker_timeout: float = Field(
        default=600.0, gt=0, description="Seconds the docker client waits on one engine call (a build step can be slow)."
    )
    image_base: str = Field(
        default="python:3.11-slim",
        description="Default base image of the serving image on machines that reach a container registry.",
    )
    local_base_image: str = Field(
        default="fpgaflow/python-base:bookworm",
        description="Name of the base image scripts/base-image makes locally (Debian bookworm + python3-venv) "
        "for machines without a registry.",
    )
    image_python_version: str = Field(
        default="3.11",
        pattern=r"^3\.\d+$",
        description="Python version of the base image; the wheelhouse holds wheels for it.",
    )
    image_grpc_port: int = Field(
        default=8500, ge=1, le=65535, description="gRPC port the serving container listens on (TF Serving's default)."
    )

    @model_validator(mode="after")
    def _resolve_paths(self) -> "Settings":
        self.home = self.home.expanduser().resolve()
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.home / 'mlflow.db'}"
        return self

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
