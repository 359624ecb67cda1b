"""`fpgaflow doctor`: what this machine offers the pipeline."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import get_pipeline_settings

CPU_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [label for flag, label in CPU_FEATURES.items() if flag in flags]


def docker_engine_status() -> str:
    try:
        import docker

        client = docker.from_env(timeout=3)
        version = client.version()
        return f"reachable (engine {version.get('Version', '?')})"
    except Exception as error:  # any failure means the same thing: no usable engine
        return f"not reachable ({type(error).__name__}); scripts/docker-engine installs and starts one"


def prefect_api_mode() -> str:
    try:
        from prefect.settings import PREFECT_API_URL
    except ImportError:
        return "prefect not installed"
    url = PREFECT_API_URL.value()
    return f"server at {url}" if url else "ephemeral (a local server is started for each run)"


def onnxruntime_report() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return f"{onnxruntime.__version__} (providers: {', '.join(onnxruntime.get_available_providers())})"


def weights_report() -> str:
    from fpgaflow.tasks.featurizers.weights_store import cache_status

    try:
        rows = cache_status()
    except PipelineStepError as error:
        return str(error)
    cached = [row.entry.name for row in rows if row.path]
    return f"{len(cached)} of {len(rows)} cached" + (f" ({', '.join(cached)})" if cached else "") + "; `fpgaflow weights list`"


def machine_report() -> dict[str, str]:
    settings = get_pipeline_settings()
    return {
        "python": f"{platform.python_version()} ({platform.machine()})",
        "cpu cores": str(os.cpu_count()),
        "cpu features": ", ".join(cpu_features()) or "none of " + ", ".join(CPU_FEATURES.values()),
        "tensorflow": _version("tensorflow"),
        "onnxruntime": onnxruntime_report(),
        "mlflow": _version("mlflow"),
        "prefect": _version("prefect"),
        "docker engine": docker_engine_status(),
        "fpgaflow home": str(settings.home),
        "mlflow tracking uri": settings.mlflow_tracking_uri,
        "prefect api": prefect_api_mode(),
        "imagenet weights": weights_report(),
    }
