"""Placing models on devices: what a graph costs on a device, whether it fits, and how to split it when it does not.

- :mod:`~fpgaflow.fpga_runtime.placement.cost`: per-layer resources of a graph and the device latency model.
- :mod:`~fpgaflow.fpga_runtime.placement.fit`: the one on-chip memory check of the device, the cluster and
  ``fpgaflow estimate``.
- :mod:`~fpgaflow.fpga_runtime.placement.split`: where a graph can be cut and into how many parts.
- :mod:`~fpgaflow.fpga_runtime.placement.segments`: a (split) service's segments, one node each.
"""
