"""The pipeline's settings: the serving runtime's, plus every default of the pipeline steps.

Values come from ``FPGAFLOW_<FIELD>`` environment variables (``FPGAFLOW_MIN_IMAGE_WIDTH``,
``FPGAFLOW_MLFLOW_TRACKING_URI`` ...) or from the keyword arguments of :class:`PipelineSettings`,
each field documented here. The runtime's fields (home, devices, cluster, servers) are inherited
from :class:`fpgaflow.fpga_runtime.settings.Settings`, which knows no pipeline field.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from fpgaflow.fpga_runtime.numerics import FORMATS
from fpgaflow.fpga_runtime.settings import Settings

# Where `fpgaflow ui mlflow|prefect` serves each UI on 127.0.0.1 unless told another port.
DEFAULT_UI_PORTS = {"mlflow": 5000, "prefect": 4200}


class PipelineSettings(Settings):
    progress: bool = Field(
        default=True,
        description="Progress of long steps (featurization, training epochs, detection feature maps, weight downloads): "
        "a bar on a terminal, plain lines otherwise; false (`--quiet`) silences it.",
    )

    # -- MLflow tracking store ----------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty means SQLite inside the home directory.",
    )

    # -- the team stack (fpgaflow team-stack): PostgreSQL under an MLflow and a Prefect server ------------
    postgres_bin_dir: Path | None = Field(
        default=None,
        description="Folder of PostgreSQL's initdb, pg_ctl and postgres; unset = Debian's newest "
        "/usr/lib/postgresql/<version>/bin, else the pg_ctl on PATH.",
    )
    postgres_user: str = Field(
        default="postgres",
        description="The unprivileged user PostgreSQL runs as when fpgaflow runs as root (PostgreSQL refuses root).",
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

    # -- pipeline smoke test ---------------------------------------------------------------
    smoke_test_images: int = Field(default=16, ge=1, description="Held-out test images scored through the deployed service.")

    # -- detection data intake (images/ + annotations/ + labels.txt) -------------------------
    detection_min_images: int = Field(
        default=10, ge=3, description="Fewest annotated images a detection dataset may have (train, val and test need one each)."
    )
    detection_min_objects_per_label: int = Field(
        default=1, ge=0, description="Fewest annotated objects each label of labels.txt must have across the dataset."
    )

    # -- training: featurizers, feature cache, fine-tuning ---------------------------------
    imagenet_weights_dir: Path = Field(
        default=Path("~/.keras/models"),
        description="The Keras cache: an ImageNet file already there under its keras.applications name is "
        "reused (after its hash is checked) instead of downloaded again.",
    )

    # -- ImageNet weights: download, mirror, cache (fpgaflow weights ...) ------------------------
    weights_url: str = Field(
        default="",
        description="Base URL of a mirror serving the ImageNet files under their keras.applications file names "
        "(<weights_url>/<file>); empty = each file's published URL.",
    )
    weights_manifest: Path | None = Field(
        default=None,
        description="JSON manifest of the ImageNet files (name, file, url, sha256 or md5, size) used instead of "
        "the built-in one, e.g. for files an air-gapped site retrained; unset = the keras.applications files.",
    )
    weights_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Seconds a weights download may wait to connect or for the next bytes."
    )
    weights_retries: int = Field(
        default=3, ge=0, le=10, description="Retries of a weights download whose connection failed or was cut."
    )
    weights_retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="Wait before the first retry of a weights download; doubled for each next one."
    )
    weights_auto_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="With weights 'auto': seconds a download may wait (no retries) before the run falls back to "
        "seeded random initialisation, saying so.",
    )
    feature_cache: bool = Field(
        default=True,
        description="Keep computed features under <home>/cache/features, one file per split, keyed by the "
        "featurizer graph's hash, the preprocessing and the content of the split's images, so a graph never "
        "featurizes the same images twice.",
    )

    onnx_cache: bool = Field(
        default=True,
        description="Keep tf2onnx conversions under <home>/cache/onnx, keyed by the Keras model's architecture, "
        "weights and opset, so the featurizer training ran through is not converted again by the conversion step.",
    )
    build_cache_dir: Path | None = Field(
        default=None,
        description="Folder of the build caches, keyed by their inputs: tf2onnx conversions (onnx/) and the serving "
        "image's fpgaflow wheel and wheelhouse (wheelhouse/); empty means <home>/cache. Several homes (a team's "
        "machines on a shared disk, a test session) can share one: an entry is written whole or not at all.",
    )

    # -- MLflow tracking and registry, ONNX conversion, service packaging -----------------
    mlflow_experiment: str = Field(default="fpgaflow", description="MLflow experiment every pipeline run is logged to.")
    mlflow_ui_url: str = Field(
        default="",
        description="Where the Prefect artifacts' links open the MLflow UI; empty: an http(s) tracking server itself, "
        "else `fpgaflow ui mlflow` at its default port.",
    )
    prefect_ui_url: str = Field(
        default="",
        description="Where the MLflow run's and the model card's flow-run links open the Prefect UI; empty: Prefect's "
        "PREFECT_UI_URL, else `fpgaflow ui prefect` at its default port.",
    )
    mlflow_http_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a failed request to an http(s) tracking server (MLflow's MLFLOW_HTTP_REQUEST_MAX_RETRIES, "
        "set from this), with MLflow's exponential back-off. MLflow's own default, 7, waits minutes before a step "
        "learns that the server is down.",
    )
    mlflow_http_timeout_seconds: int = Field(
        default=30,
        ge=1,
        description="Seconds one request to an http(s) tracking server may wait to connect or for an answer "
        "(MLflow's MLFLOW_HTTP_REQUEST_TIMEOUT, set from this; MLflow's own default is 120).",
    )
    mlflow_artifact_root: str = Field(
        default="",
        description="Artifact location given to the experiment when fpgaflow creates it; empty = "
        "<home>/mlartifacts for a local backend (sqlite, postgresql, ...), the server's own artifact "
        "store for an http(s) tracking server.",
    )
    onnx_opset: int = Field(default=17, ge=13, description="ONNX opset tf2onnx converts both stages to.")
    parity_tolerance: float = Field(
        default=1e-4,
        ge=0,
        description="Largest allowed Keras-vs-onnxruntime max absolute difference of a stage's output, "
        "divided by max(1, largest absolute Keras output) so big feature values are compared relatively.",
    )
    parity_min_top1_agreement: float = Field(
        default=0.99, ge=0, le=1, description="Smallest allowed share of held-out images whose top-1 class agrees."
    )
    parity_images: int = Field(default=32, ge=1, description="Held-out images the parity check runs on, at most.")

    # -- image build (serving image) -----------------------------------------------------------
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

    # -- kubernetes deployment target ----------------------------------------------------------
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig the kubernetes target applies manifests with; unset = ~/.kube/config when present."
    )
    kubernetes_namespace: str = Field(
        default="fpgaflow",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace the kubernetes target deploys into (rendered with the restricted Pod Security level).",
    )
    kubernetes_cpu_request: str = Field(default="1", description="CPU request of a pod per emulated device it holds.")
    kubernetes_cpu_limit: str = Field(default="2", description="CPU limit of a pod per emulated device it holds.")
    kubernetes_memory_request: str = Field(
        default="2Gi", description="Memory request (and limit) of a pod per emulated device it holds."
    )
    kubernetes_image_pull_policy: str = Field(
        default="Always",
        pattern="^(Always|IfNotPresent|Never)$",
        description="imagePullPolicy of the pods; IfNotPresent for an image loaded into the nodes by hand.",
    )
    kubernetes_tls_secret: str = Field(
        default="fpgaflow-tls",
        description="kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) the entry pods serve TLS with, mounted as files; "
        "its certificate names the entry Service (NAME.NAMESPACE.svc) and ca.crt signed it.",
    )
    kubernetes_client_tls_secret: str = Field(
        default="",
        description="kubernetes.io/tls Secret of a client certificate (tls.crt, tls.key) and the CA that signs clients "
        "(ca.crt): set, the entry pods require mutual TLS and the smoke test presents this certificate; empty = server TLS only.",
    )
    kubernetes_api_keys_secret: str = Field(
        default="fpgaflow-api-keys",
        description="Secret whose item 'api-keys' holds the keys the entry pods accept, one per line, mounted as a file.",
    )
    kubernetes_health_port: int = Field(
        default=8510, ge=1, le=65535, description="Plaintext gRPC-health-only port of the pods, for the kubelet's probes."
    )
    kubernetes_rollout_timeout_seconds: float = Field(
        default=600.0, gt=0, description="How long the apply waits for the rollout, and then for the smoke test."
    )
    kubernetes_poll_seconds: float = Field(
        default=2.0, gt=0, description="How often the apply asks the API server how the rollout and the smoke test go."
    )
    kubernetes_max_replicas: int = Field(
        default=8,
        ge=1,
        description="Most pods the HorizontalPodAutoscaler may run per model (never fewer than the replicas asked).",
    )
    kubernetes_target_cpu_percent: int = Field(
        default=70, ge=1, le=100, description="Average CPU utilisation the HorizontalPodAutoscaler keeps the pods at."
    )

    # -- FPGA numerics: int8 calibration, per-format accuracy gate ---------------------------
    max_accuracy_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest top-1 test accuracy drop vs fp32 (a fraction: 0.01 = 1 point) a numeric format "
        "may show and still pass its gate, for formats max_accuracy_drop_by_format does not name.",
    )
    max_accuracy_drop_by_format: dict[str, float] = Field(
        default={"msfp8": 0.02},
        description='Allowed drop of particular formats (JSON: {"msfp8": 0.02}); ms-fp8 keeps two mantissa '
        "bits, one fewer than ms-fp9, and is allowed 2 points.",
    )
    numerics_latency_repeats: int = Field(
        default=20, ge=1, description="Batch-1 runs per format when the numerics step measures emulation latency."
    )
    int8_calibration_images: int = Field(
        default=64, ge=1, description="Preprocessed training images int8 calibration runs through the model, at most."
    )
    int8_calibration_method: str = Field(
        default="minmax",
        pattern="^(minmax|entropy|percentile)$",
        description="How int8 calibration turns observed activations into ranges (onnxruntime's MinMax, Entropy, Percentile).",
    )
    int8_per_channel: bool = Field(default=True, description="Quantize int8 weights with one scale per output channel.")
    int8_reduce_range: bool = Field(
        default=True,
        description="Quantize int8 weights to 7 bits, so that onnxruntime's u8s8 kernels on x86 CPUs without VNNI "
        "(AVX2, AVX-512F) cannot saturate their 16-bit pair sums: the same integers, and verdicts, on every CPU. "
        "false = full 8-bit weights, exact only on VNNI CPUs (on ResNet-50 on AVX2: features SQNR 19 dB instead of 37).",
    )

    msfp_bias_correction: bool = Field(
        default=False,
        description="Give each Conv's float bias the mean error that rounding its weights to msfp8/msfp9 causes on "
        "the calibration images (int8_calibration_images of them), as bias correction does for narrow weights. "
        "Off by default: it raises the features' SQNR but not the retrained head's accuracy (ResNet-50, random "
        "weights, sample digits at 64 px, 5-fold: msfp9 -1.3 points, msfp8 -3.1 points with it).",
    )

    # -- orchestration: retraining, data watch, monitoring (Prefect flows) -------------------
    retrain_min_improvement: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="Test quality (a fraction: accuracy for a classifier, mAP@0.5 for a detector) by which a "
        "retrained candidate must beat the champion, both scored "
        "on the same current test split, to replace it: promoted only when candidate minus champion is greater "
        "than this. 0 = any strict improvement; a negative value also accepts a candidate that much worse.",
    )
    monitor_min_accuracy: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Holdout accuracy (a fraction) below which the monitor flow emits fpgaflow.model.degraded for a classifier.",
    )
    monitor_min_map50: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Holdout mAP@0.5 (a fraction) below which the monitor flow emits fpgaflow.model.degraded for a detector.",
    )
    monitor_batch_size: int = Field(
        default=16, ge=1, description="Images per Predict request when the monitor flow scores a holdout folder."
    )

    @field_validator("max_accuracy_drop_by_format")
    @classmethod
    def _fractions_of_known_formats(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [name for name in value if name not in FORMATS]
        if unknown:
            raise ValueError(f"unknown numeric formats {unknown}; known formats: {', '.join(FORMATS)}")
        bad = {name: limit for name, limit in value.items() if not 0 <= limit <= 1}
        if bad:
            raise ValueError(f"an allowed drop is a fraction between 0 and 1, got {bad}")
        return value

    @property
    def build_cache(self) -> Path:
        return self.build_cache_dir or self.home / "cache"

    @model_validator(mode="after")
    def _default_tracking_uri(self) -> PipelineSettings:
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.home / 'mlflow.db'}"
        return self


@lru_cache(maxsize=1)
def get_pipeline_settings() -> PipelineSettings:
    """The process-wide pipeline settings (read once from the environment)."""
    return PipelineSettings()
