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
        description="Directory searched for ImageNet weight files under their keras.applications file names "
        "(the Keras cache by default); weights 'imagenet' fails with instructions when the file is not there.",
    )
    feature_cache: bool = Field(
        default=True,
        description="Keep computed features under <home>/cache/features, keyed by featurizer weights, dataset "
        "and preprocessing, so a re-run skips featurizing.",
    )

    # -- MLflow tracking and registry, ONNX conversion, service packaging -----------------
    mlflow_experiment: str = Field(default="fpgaflow", description="MLflow experiment every pipeline run is logged to.")
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

    # -- emulated FPGA device and onnxruntime sessions -----------------------------------
    ort_intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="Threads per onnxruntime session (CPU stages and the emulated device); 0 lets onnxruntime choose.",
    )
    # -- benchmarks: onnxruntime tuning found by `fpgaflow bench` ----------------------------
    ort_allow_spinning: bool = Field(
        default=False,
        description="Let onnxruntime's idle intra-op threads spin instead of sleeping. Off: on a node, preprocessing, "
        "gRPC and the session share few cores, and spinning threads take the CPU the others need.",
    )
    device_profile: str = Field(
        default="stratix10",
        description="Device profile a node emulates: a bundled profile name (arria10, stratix10) or a YAML path. "
        "stratix10 by default: it holds ResNet-50's weights in int8, msfp8 or msfp9; the arria10 holds none of them on chip.",
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

    # -- cluster: gateway, placement, health checks, deployment targets ----------------------
    cluster_target: str = Field(
        default="local",
        pattern="^(local|docker)$",
        description="Where `fpgaflow cluster up` runs the nodes: 'local' processes or 'docker' containers.",
    )
    cluster_nodes: int = Field(default=2, ge=1, description="Nodes (emulated FPGAs, one model each) a new cluster has.")
    cluster_gateway_host: str = Field(
        default="127.0.0.1", description="Interface the cluster gateway binds (loopback by default)."
    )
    cluster_gateway_port: int = Field(
        default=8500, ge=0, le=65535, description="gRPC port of the cluster gateway (TF Serving's default); 0 picks a free port."
    )
    cluster_health_interval_seconds: float = Field(
        default=0.5, gt=0, description="How often the gateway checks each node's gRPC health and looks for dead nodes to restart."
    )
    cluster_health_timeout_seconds: float = Field(default=2.0, gt=0, description="Deadline of one health check of a node.")
    cluster_request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Deadline of a request the gateway forwards when the client set none; retries stay within it.",
    )
    cluster_node_start_timeout_seconds: float = Field(
        default=300.0, gt=0, description="How long a node may take to start, load its model and answer."
    )
    cluster_drain_timeout_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a replica taken out of rotation (scale down, update, undeploy) may finish its in-flight requests.",
    )
    cluster_stats_window_seconds: float = Field(
        default=60.0, gt=0, description="Window of the request rates and p50/p99 latencies the cluster status reports."
    )
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig the kubernetes target applies manifests with; unset = ~/.kube/config when present."
    )
    kubernetes_namespace: str = Field(default="default", description="Namespace the kubernetes target deploys into.")
    kubernetes_cpu_request: str = Field(default="1", description="CPU request of one FPGA-node container.")
    kubernetes_memory_request: str = Field(default="2Gi", description="Memory request (and limit) of one FPGA-node container.")
    kubernetes_max_replicas: int = Field(
        default=8,
        ge=1,
        description="Most pods the HorizontalPodAutoscaler may run per model (never fewer than the replicas asked).",
    )
    kubernetes_target_cpu_percent: int = Field(
        default=70, ge=1, le=100, description="Average CPU utilisation the HorizontalPodAutoscaler keeps the pods at."
    )

    # -- model server (one node: gRPC APIs, health, metrics) ---------------------------------
    server_host: str = Field(
        default="127.0.0.1",
        description="Interface a node binds; 0.0.0.0 inside a container so the port can be published.",
    )
    server_port: int = Field(default=8500, ge=0, le=65535, description="gRPC port of a node; 0 picks a free port.")
    server_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="HTTP port of the node's Prometheus /metrics; 0 picks a free port; unset = no metrics endpoint.",
    )
    server_workers: int = Field(default=8, ge=1, description="Threads answering gRPC calls concurrently on a node.")
    server_max_message_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest gRPC request or response a node accepts or sends."
    )
    server_max_batch_size: int = Field(default=64, ge=1, description="Most images (or preprocessed inputs) in one request.")
    server_devices: int | None = Field(
        default=None,
        ge=1,
        description="Most emulated devices one node may chain a model over; unset: as many as the model needs.",
    )
    server_shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="On SIGTERM, how long in-flight requests may run before they are cancelled."
    )
    server_api_keys: tuple[str, ...] = Field(
        default=(),
        description="Keys accepted as 'authorization: Bearer <key>' metadata; empty = no authentication. "
        "Two keys allow rotating one while clients still use the other (health checks stay open).",
    )

    # -- reliability and security: gateway TLS, API key rotation, gateway watchdog -------------
    gateway_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) the cluster gateway serves TLS with; set together with "
        "gateway_tls_key_file. Unset = plaintext gRPC (fine on loopback only).",
    )
    gateway_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of gateway_tls_cert_file (readable by the gateway's user only)."
    )
    gateway_api_keys_file: Path | None = Field(
        default=None,
        description="File of API keys the gateway accepts, one per line (primary, then secondary; '#' comments). "
        "Read at start and again on `fpgaflow cluster reload-keys`, so keys rotate without downtime; "
        "adds to server_api_keys.",
    )
    cluster_gateway_watchdog: bool = Field(
        default=True,
        description="`fpgaflow cluster up` runs the gateway under a watchdog that restarts it on the same port "
        "when it dies (killed or crashed); a clean stop or `cluster down` ends both.",
    )
    cluster_gateway_restart_backoff_seconds: float = Field(
        default=0.5,
        gt=0,
        description="First wait before the watchdog restarts a dead gateway; doubles on each quick death, at most 30 s.",
    )

    # -- FPGA numerics: int8 calibration, per-format accuracy gate ---------------------------
    max_accuracy_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest top-1 test accuracy drop vs fp32 (a fraction: 0.01 = 1 point) a numeric format "
        "may show and still pass its gate.",
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
        default=False,
        description=(
            "Quantize int8 weights to 7 bits: avoids integer saturation on x86 CPUs without VNNI at a small accuracy cost."
        ),
    )

    # -- orchestration: retraining, data watch, monitoring (Prefect flows) -------------------
    retrain_min_improvement: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="Test accuracy (a fraction) by which a retrained candidate must beat the champion, both scored "
        "on the same current test split, to replace it: promoted only when candidate minus champion is greater "
        "than this. 0 = any strict improvement; a negative value also accepts a candidate that much worse.",
    )
    monitor_min_accuracy: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Holdout accuracy (a fraction) below which the monitor flow emits fpgaflow.model.degraded.",
    )
    monitor_batch_size: int = Field(
        default=16, ge=1, description="Images per Predict request when the monitor flow scores a holdout folder."
    )

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
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
