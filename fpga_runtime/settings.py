"""The serving runtime's settings: nodes, the emulated devices, the cluster and its gateway.

Every default the runtime uses lives here, each field documented. Values come from
``FPGAFLOW_<FIELD>`` environment variables (``FPGAFLOW_HOME``, ``FPGAFLOW_SERVER_PORT`` ...) or from
the keyword arguments of :class:`Settings`. The pipeline's own settings extend these in
:mod:`fpgaflow.tasks.settings`; nothing else in the code base reads ``os.environ`` for configuration.
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

    # -- Docker engine and the serving container (docker target, image build) ---------------
    docker_host: str = Field(
        default="",
        description="Docker engine address (unix:///path.sock, tcp://host:port); empty = the docker SDK's "
        "default (DOCKER_HOST or the local socket).",
    )
    docker_timeout: float = Field(
        default=600.0, gt=0, description="Seconds the docker client waits on one engine call (a build step can be slow)."
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
        default="127.0.0.1",
        description="Interface the cluster gateway binds (loopback by default); any other needs TLS "
        "(gateway_tls_cert_file and gateway_tls_key_file), else the gateway refuses to start.",
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

    server_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) a node serves TLS with; set together with server_tls_key_file. "
        "Unset = plaintext gRPC (the kubernetes target mounts both from a Secret).",
    )
    server_tls_key_file: Path | None = Field(default=None, description="PEM private key of server_tls_cert_file.")
    server_tls_client_ca_file: Path | None = Field(
        default=None, description="PEM CA a node requires client certificates to be signed by (mutual TLS); unset = none asked."
    )
    server_api_keys_file: Path | None = Field(
        default=None,
        description="File of API keys a node accepts, one per line ('#' comments); adds to server_api_keys "
        "(the kubernetes target mounts it from a Secret).",
    )
    server_health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Plaintext port answering gRPC health only, for probes that cannot speak TLS (the kubelet's); "
        "unset = health is answered on the gRPC port alone.",
    )

    client_token: str = Field(
        default="",
        description="API key `fpgaflow score` sends as 'authorization: Bearer <key>' (FPGAFLOW_CLIENT_TOKEN); "
        "`--token-file` overrides it. Never given on a command line, where `ps` would show it.",
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
    gateway_tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA the gateway requires client certificates to be signed by (mutual TLS); unset = none asked.",
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

    @model_validator(mode="after")
    def _resolve_home(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        return self

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide runtime settings (read once from the environment)."""
    return Settings()
