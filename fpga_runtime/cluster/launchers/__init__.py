"""The cluster's targets side by side: a target name chooses the launcher that starts, watches and stops its nodes.

- ``local``: every node a process on this machine (:mod:`~fpgaflow.fpga_runtime.cluster.launchers.local`).
- ``docker``: every node a container of the model's serving image (:mod:`~fpgaflow.fpga_runtime.cluster.launchers.docker`).

Each implements :class:`fpgaflow.fpga_runtime.cluster.launcher.Launcher` and is built as
``Launcher(cluster_name, settings, cluster_directory)``. The ``kubernetes`` deployment target has
no node launcher: Kubernetes runs the nodes from manifests (``tasks/deployment/kubernetes.py``).
"""

from __future__ import annotations

from pathlib import Path

from fpgaflow.fpga_runtime.cluster.launcher import Launcher
from fpgaflow.fpga_runtime.cluster.launchers.docker import DockerLauncher
from fpgaflow.fpga_runtime.cluster.launchers.local import LocalLauncher
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.settings import Settings

LAUNCHERS: dict[str, type[Launcher]] = {"local": LocalLauncher, "docker": DockerLauncher}


def launcher_name(saved: str) -> str:
    """The table name of a launcher as a cluster state names it; states written before the table name it ``module:Class``."""
    if ":" not in saved:
        return saved
    class_name = saved.rpartition(":")[2]
    return next((name for name, launcher in LAUNCHERS.items() if launcher.__name__ == class_name), saved)


def build_launcher(name: str, cluster_name: str, settings: Settings, directory: Path) -> Launcher:
    """The launcher of target ``name`` for the cluster ``cluster_name`` kept in ``directory``."""
    launcher_class = LAUNCHERS.get(launcher_name(name))
    if launcher_class is None:
        raise FpgaflowError(f"no cluster launcher for the {name!r} target; the targets are {sorted(LAUNCHERS)}")
    return launcher_class(cluster_name, settings, directory)
