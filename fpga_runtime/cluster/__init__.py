"""The emulated FPGA cluster: nodes (one device, one model each) behind a gateway.

- :mod:`~fpgaflow.fpga_runtime.cluster.state`: nodes, placements and versions, persisted atomically.
- :mod:`~fpgaflow.fpga_runtime.cluster.router` and :mod:`~fpgaflow.fpga_runtime.cluster.gateway`: the gateway, the
  same gRPC APIs as a node over a data plane that routes to replicas instead of computing.
- :mod:`~fpgaflow.fpga_runtime.cluster.controller`: placement, deploy, scale, rolling update, undeploy,
  and the supervisor that restarts dead nodes.
- :mod:`~fpgaflow.fpga_runtime.cluster.launchers`: each target's nodes (``local``: processes on this machine,
  ``docker``: containers), chosen by target name.
- :mod:`~fpgaflow.fpga_runtime.cluster.control` and :mod:`~fpgaflow.fpga_runtime.cluster.daemon`: the gateway
  process, and how commands reach it.
"""
