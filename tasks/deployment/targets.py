"""Which launcher runs a cluster's nodes on each target (``module:Class``, loaded by the gateway process).

Kept free of heavy imports: the ``fpgaflow cluster`` commands read it.
"""

from fpgaflow.fpga_runtime.cluster.daemon import LOCAL_LAUNCHER

LAUNCHERS = {"local": LOCAL_LAUNCHER, "docker": "fpgaflow.tasks.deployment.docker_cluster:DockerLauncher"}
