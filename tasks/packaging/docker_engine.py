"""The one way fpgaflow reaches a Docker engine (image build, docker deployment target)."""

from __future__ import annotations

import docker
import requests
from docker.errors import DockerException

from fpgaflow.fpga_runtime.settings import Settings, get_settings
from fpgaflow.tasks.errors import PipelineStepError


class EngineUnreachable(PipelineStepError):
    """No Docker engine answers at the configured address."""


def engine_address(settings: Settings | None = None) -> str:
    """The engine address in force: the setting, else what the docker SDK takes from its environment."""
    settings = settings or get_settings()
    if settings.docker_host:
        return settings.docker_host
    return docker.utils.kwargs_from_env().get("base_url") or "the local default socket"


def connect(settings: Settings | None = None) -> docker.DockerClient:
    """A docker client whose engine has answered a ping; :class:`EngineUnreachable` says why not."""
    settings = settings or get_settings()
    try:
        if settings.docker_host:
            client = docker.DockerClient(base_url=settings.docker_host, timeout=settings.docker_timeout)
        else:
            client = docker.from_env(timeout=settings.docker_timeout)
        client.ping()
    except (DockerException, requests.RequestException) as error:
        raise EngineUnreachable(
            f"no Docker engine reachable at {engine_address(settings)}: {error} "
            "(start one with scripts/docker-engine, or set FPGAFLOW_DOCKER_HOST)"
        ) from None
    return client
