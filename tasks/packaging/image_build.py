"""Image build: a serving image of one service directory, built with the Docker SDK.

The build context holds only the service directory, the fpgaflow wheel, the runtime wheelhouse and
a generated Dockerfile. The image installs fpgaflow's runtime-only base install into a venv
(``/opt/fpgaflow``, so bases without pip work too), runs as a non-root user, carries the model's
lineage as labels and checks itself through gRPC health. With no engine reachable the context is
still written and the result says, with the reason, that no image was built.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from docker.errors import APIError, DockerException, ImageNotFound

from fpgaflow.fpga_runtime.service import ServiceDefinition, load_service
from fpgaflow.fpga_runtime.serving_image import SERVICE_PATH, VENV
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.packaging.docker_engine import EngineUnreachable, connect
from fpgaflow.tasks.packaging.wheelhouse import build_project_wheel, ensure_wheelhouse, wheel_requirements
from fpgaflow.tasks.progress import Progress
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

log = logging.getLogger(__name__)

STATE_PATH = "/var/lib/fpgaflow"
RUNTIME_USER = "fpgaflow"
RUNTIME_UID = 10001
LABEL_PREFIX = "fpgaflow."
CONTEXT_DIRS = ("service", "runtime", "wheels")
# Marks the (dangling) image of the install stage: the builder's cache, shared by every service
# built from the same base, wheelhouse and fpgaflow wheel; prune it with this label filter.
INSTALL_STAGE_LABEL = f"{LABEL_PREFIX}build-stage=install"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ImageBuildFailed(PipelineStepError):
    """The engine refused or failed the build; the message carries the engine's error."""


@dataclass
class ImageResult:
    """What the image-build step made (or, with ``built`` false, why it made no image)."""

    tag: str
    built: bool
    base_image: str
    context_dir: str
    log_path: str
    labels: dict[str, str] = field(default_factory=dict)
    image_id: str | None = None
    size_bytes: int | None = None
    user: str | None = None
    build_seconds: float | None = None
    reason: str = ""

    @property
    def image(self) -> str | None:
        """The tag to deploy, or None when no image was built."""
        return self.tag if self.built else None

    def summary(self) -> dict:
        return {
            "image": self.image,
            "reason": self.reason or None,
            "image_id": self.image_id,
            "size_bytes": self.size_bytes,
            "base_image": self.base_image,
        }


# -- names and labels ---------------------------------------------------------------------


def default_tag(service: ServiceDefinition) -> str:
    """``fpgaflow/<name>:<version>`` in the character sets Docker accepts."""
    repository = re.sub(r"[^a-z0-9]+", "-", service.name.lower()).strip("-")
    version = re.sub(r"[^A-Za-z0-9_.-]", "-", service.version)[:128]
    if not version or version[0] in ".-":
        version = f"v{version}"[:128]
    return f"fpgaflow/{repository}:{version}"


def source_label(key: str) -> str:
    """The label name of a ``service.source`` entry (``mlflow_run_id`` -> ``fpgaflow.source.mlflow-run-id``)."""
    return f"{LABEL_PREFIX}source." + re.sub(r"[^a-z0-9.-]+", "-", key.lower()).strip("-.")


def image_labels(service: ServiceDefinition, base_image: str) -> dict[str, str]:
    """The labels of a service's image: model identity, numeric format and every lineage entry."""
    labels = {
        "org.opencontainers.image.title": service.name,
        "org.opencontainers.image.version": service.version,
        "org.opencontainers.image.description": (
            f"fpgaflow serving image of {service.name} {service.version} ({service.numeric_format})"
        ),
        "org.opencontainers.image.base.name": base_image,
        f"{LABEL_PREFIX}model.name": service.name,
        f"{LABEL_PREFIX}model.version": service.version,
        f"{LABEL_PREFIX}model.task": service.task,
        f"{LABEL_PREFIX}numeric-format": service.numeric_format,
    }
    labels.update({source_label(key): value for key, value in sorted(service.source.items())})
    return labels


# -- the build context --------------------------------------------------------------------


def _dockerfile_string(value: str) -> str:
    """A double-quoted Dockerfile word that the builder reads back as ``value`` (no variable expansion)."""
    value = re.sub(r"[\x00-\x1f\x7f]", " ", value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def healthcheck_command() -> list[str]:
    """gRPC health Check of the node inside the container, on the port its settings give; exit 0 only on SERVING."""
    code = (
        "import sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;"
        "from fpgaflow.fpga_runtime.settings import get_settings as s;"
        "r=g.HealthStub(grpc.insecure_channel(f'127.0.0.1:{s().server_port}')).Check(h.HealthCheckRequest(),timeout=4);"
        "sys.exit(r.status!=h.HealthCheckResponse.SERVING)"
    )
    return [f"{VENV}/bin/python", "-c", code]


ENTRYPOINT = [f"{VENV}/bin/python", "-m", "fpgaflow.fpga_runtime"]
# The overridable CMD: arguments of ``python -m fpgaflow.fpga_runtime`` (host and port come from the ENV).
SERVE_COMMAND = [SERVICE_PATH]


def render_dockerfile(
    base_image: str, runtime_wheel: str, requirements: list[str], labels: dict[str, str], grpc_port: int
) -> str:
    """Two stages on the same base: install into a venv, then copy the venv into a clean image.

    The requirements go in before the fpgaflow wheel, in their own layer, so a change of
    fpgaflow's sources rebuilds only the small last install layer (the engine caches the rest).
    """
    pip_install = f"{VENV}/bin/pip install --no-index --no-cache-dir --disable-pip-version-check --find-links /build/wheels"
    add_runtime_user = (
        f"useradd --no-log-init --uid {RUNTIME_UID} --gid {RUNTIME_UID} --no-create-home --home-dir {STATE_PATH} "
        f"--shell /usr/sbin/nologin {RUNTIME_USER}"
    )
    quoted_requirements = " ".join(shlex.quote(requirement) for requirement in requirements)
    label_lines = " \\\n      ".join(f"{_dockerfile_string(key)}={_dockerfile_string(value)}" for key, value in labels.items())
    return f"""\
# Generated by fpgaflow's image-build step.
FROM {base_image} AS install
COPY wheels /build/wheels
RUN python3 -m venv {VENV} \\
 && {pip_install} {quoted_requirements}
COPY runtime /build/runtime
RUN {pip_install} /build/runtime/{runtime_wheel}
LABEL {INSTALL_STAGE_LABEL}

FROM {base_image}
RUN groupadd --gid {RUNTIME_UID} {RUNTIME_USER} \\
 && {add_runtime_user} \\
 && mkdir -p {STATE_PATH} && chown {RUNTIME_UID}:{RUNTIME_UID} {STATE_PATH}
COPY --from=install {VENV} {VENV}
COPY service {SERVICE_PATH}
ENV PATH={VENV}/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 FPGAFLOW_HOME={STATE_PATH} \\
    FPGAFLOW_SERVER_HOST=0.0.0.0 FPGAFLOW_SERVER_PORT={grpc_port}
LABEL {label_lines}
USER {RUNTIME_UID}:{RUNTIME_UID}
WORKDIR {STATE_PATH}
EXPOSE {grpc_port}
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD {json.dumps(healthcheck_command())}
ENTRYPOINT {json.dumps(ENTRYPOINT)}
CMD {json.dumps(SERVE_COMMAND)}
"""


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_service(service_dir: Path, target: Path) -> None:
    """Regular files of the service directory only: a symlink could smuggle in anything on the host."""
    for path in sorted(service_dir.rglob("*")):
        relative = path.relative_to(service_dir)
        if path.is_symlink():
            raise ImageBuildFailed(f"{path} is a symlink; the service directory must hold regular files only")
        if path.is_dir():
            (target / relative).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
            (target / relative).chmod(0o644)


def write_build_context(
    service_dir: Path, context_dir: Path, base_image: str, settings: PipelineSettings | None = None
) -> dict[str, str]:
    """Write ``context_dir`` afresh: service/, runtime/ (fpgaflow wheel), wheels/, Dockerfile.

    Validates the service directory first; returns the image's labels.
    """
    settings = settings or get_pipeline_settings()
    service_dir = Path(service_dir)
    service = load_service(service_dir)
    context_dir = Path(context_dir)
    if context_dir.resolve().is_relative_to(service_dir.resolve()):
        raise ImageBuildFailed(f"the build context {context_dir} must not lie inside the service directory {service_dir}")
    if context_dir.exists():
        shutil.rmtree(context_dir)
    for name in CONTEXT_DIRS:
        (context_dir / name).mkdir(parents=True)
    _copy_service(service_dir, context_dir / "service")
    cache_root = settings.build_cache / "wheelhouse"
    runtime_wheel = build_project_wheel(cache_root)
    _link_or_copy(runtime_wheel, context_dir / "runtime" / runtime_wheel.name)
    requirements = wheel_requirements(runtime_wheel)
    wheelhouse = ensure_wheelhouse(requirements, settings.image_python_version, cache_root)
    for wheel in sorted(wheelhouse.glob("*.whl")):
        _link_or_copy(wheel, context_dir / "wheels" / wheel.name)
    labels = image_labels(service, base_image)
    dockerfile = render_dockerfile(base_image, runtime_wheel.name, requirements, labels, settings.image_grpc_port)
    (context_dir / "Dockerfile").write_text(dockerfile)
    return labels


# -- the build ----------------------------------------------------------------------------


class _LineLog:
    """Build output to the log file and the caller, one whole line at a time, as it arrives."""

    def __init__(self, path: Path, on_line: Callable[[str], None]):
        self._file = path.open("w", encoding="utf-8")
        self._on_line = on_line
        self._pending = ""

    def write(self, text: str) -> None:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)

    def _emit(self, line: str) -> None:
        line = ANSI_ESCAPE.sub("", line).rstrip("\r")
        self._file.write(line + "\n")
        self._file.flush()
        if line.strip():
            self._on_line(line)

    def close(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""
        self._file.close()


class BuildSteps:
    """The engine's ``Step N/M : INSTRUCTION`` lines as progress: a bar on a terminal, one line per step otherwise."""

    STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.progress: Progress | None = None

    def see(self, line: str) -> None:
        match = self.STEP.match(line.strip())
        if match is None:
            log.debug(line)
            return
        done, total, instruction = int(match[1]), int(match[2]), match[3]
        if self.progress is None:
            self.progress = Progress(f"image build {self.tag}", total, "steps", interval=0)
        self.progress.update(done - self.progress.done, detail=instruction[:60])

    def close(self) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)


def _stream_build(client, context_dir: Path, tag: str, lines: _LineLog) -> tuple[str | None, str | None]:
    """Run the build, streaming its output; returns (image id, engine error)."""
    image_id = error = None
    try:
        for chunk in client.api.build(path=str(context_dir), tag=tag, rm=True, forcerm=True, pull=False, decode=True):
            if "stream" in chunk:
                lines.write(chunk["stream"])
            elif "error" in chunk:
                error = str(chunk["error"]).strip()
                lines.write(f"ERROR: {error}\n")
            elif "status" in chunk:
                lines.write(" ".join(str(chunk[key]) for key in ("id", "status", "progress") if chunk.get(key)) + "\n")
            elif isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except APIError as api_error:
        error = str(api_error.explanation or api_error)
        lines.write(f"ERROR: {error}\n")
    except (DockerException, requests.RequestException) as engine_error:
        error = f"the engine connection failed during the build: {engine_error}"
        lines.write(f"ERROR: {error}\n")
    return image_id, error


def _image_present(client, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except ImageNotFound:
        return False
    except (DockerException, requests.RequestException):
        return False


def _default_base_image(client, settings: PipelineSettings) -> tuple[str, str]:
    """(base image, why it is not the ``image_base`` setting): the setting, or the locally made base image
    where the setting's image cannot be pulled and the local one is on the engine."""
    wanted, local = settings.image_base, settings.local_base_image
    if client is None or _image_present(client, wanted) or not _image_present(client, local):
        return wanted, ""
    try:
        client.images.pull(wanted)
        return wanted, ""
    except (DockerException, requests.RequestException) as error:
        return (
            local,
            f"the base image {wanted} could not be pulled ({error}); "
            f"building on {local}, made on this engine by scripts/base-image",
        )


def build_image(
    service_dir: str | Path,
    base_image: str | None = None,
    tag: str | None = None,
    output_dir: str | Path | None = None,
    settings: PipelineSettings | None = None,
    on_line: Callable[[str], None] | None = None,
) -> ImageResult:
    """Build the serving image of ``service_dir``.

    Writes ``<output_dir>/context`` (the build context), ``build.log`` (the engine's output, line
    by line as it came) and ``image.json`` (this result); ``output_dir`` defaults to
    ``<home>/images/<name>-<version>``. Without ``base_image``: the ``image_base`` setting, or the
    locally made ``local_base_image`` when the first cannot be pulled and the second is on the engine.
    Raises :class:`ImageBuildFailed` with the engine's error when the build fails; returns
    ``built=False`` and the reason when no engine is reachable.
    """
    settings = settings or get_pipeline_settings()
    service_dir = Path(service_dir)
    service = load_service(service_dir)
    output_dir = Path(output_dir) if output_dir else settings.home / "images" / f"{service.name}-{service.version}"
    context_dir, log_path = output_dir / "context", output_dir / "build.log"
    output_dir.mkdir(parents=True, exist_ok=True)
    tag = tag or default_tag(service)
    try:
        client = connect(settings)
    except EngineUnreachable as unreachable:
        client, unreachable_reason = None, str(unreachable)
    try:
        base_image, base_note = (base_image, "") if base_image else _default_base_image(client, settings)
        labels = write_build_context(service_dir, context_dir, base_image, settings)
    except BaseException:
        if client is not None:
            client.close()
        raise
    result = ImageResult(
        tag=tag, built=False, base_image=base_image, context_dir=str(context_dir), log_path=str(log_path), labels=labels
    )
    steps = BuildSteps(tag)
    lines = _LineLog(log_path, on_line or steps.see)
    if base_note:
        log.info(base_note)
        lines.write(base_note + "\n")
    if client is None:
        result.reason = f"image not built: {unreachable_reason}; the build context is ready in {context_dir}"
        lines.write(result.reason + "\n")
        lines.close()
        log.warning(result.reason)
        return _saved(result, output_dir)
    try:
        lines.write(f"building {tag} from {base_image}\n")
        started = time.monotonic()
        image_id, error = _stream_build(client, context_dir, tag, lines)
        result.build_seconds = round(time.monotonic() - started, 1)
        if error is not None:
            if not _image_present(client, base_image):
                error += (
                    f" (the base image {base_image} is not on this engine and could not be pulled; "
                    f"where no registry is reachable, make {settings.local_base_image} with "
                    f"scripts/base-image and pass it as the base image)"
                )
            raise ImageBuildFailed(f"docker build of {tag} failed: {error}; build log: {log_path}")
        image = client.images.get(image_id or tag)
    finally:
        lines.close()
        steps.close()
        client.close()
    result.built = True
    result.image_id = image.id
    result.size_bytes = int(image.attrs.get("Size") or 0)
    result.labels = dict(image.attrs.get("Config", {}).get("Labels") or {})
    result.user = image.attrs.get("Config", {}).get("User") or "root"
    return _saved(result, output_dir)


def _saved(result: ImageResult, output_dir: Path) -> ImageResult:
    (output_dir / "image.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def image_markdown(result: ImageResult) -> str:
    if not result.built:
        return f"**No image built.** {result.reason}\n\nBuild context: `{result.context_dir}`"
    size_mb = (result.size_bytes or 0) / 1e6
    rows = [
        ("tag", result.tag),
        ("id", result.image_id),
        ("size", f"{size_mb:.0f} MB"),
        ("base", result.base_image),
        ("user", result.user),
        ("build", f"{result.build_seconds} s"),
        ("log", result.log_path),
    ]
    rows += [(f"label `{key}`", value) for key, value in result.labels.items() if key.startswith(LABEL_PREFIX)]
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | `{value}` |" for key, value in rows)
