"""The Docker engine as the pipeline reaches it (image build): the cluster's docker launcher connects the same way."""

from __future__ import annotations

import docker

from fpgaflow.fpga_runtime.cluster.launchers.docker import engine_client
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


class EngineUnreachable(PipelineStepError):
    """No Docker engine answers at the configured address."""


def connect(settings: PipelineSettings | None = None) -> docker.DockerClient:
    """A docker client whose engine has answered a ping; :class:`EngineUnreachable` says why not."""
    try:
        return engine_client(settings or get_pipeline_settings())
    except FpgaflowError as error:
        raise EngineUnreachable(str(error)) from None
