"""The segments of a service: one per FPGA stage, each run by a node of its own (a service without FPGA stages is one)."""

from __future__ import annotations

from fpgaflow.fpga_runtime.service import ServiceDefinition, Stage


def segments(service: ServiceDefinition) -> list[tuple[Stage, ...]]:
    """The stages of each segment: one segment per FPGA stage (a service without FPGA stages is one segment)."""
    result: list[list[Stage]] = [[]]
    fpga_seen = False
    for stage in service.stages:
        if stage.target == "FPGA":
            if fpga_seen:
                result.append([])
            fpga_seen = True
        result[-1].append(stage)
    return [tuple(segment) for segment in result]


def segment_count(service: ServiceDefinition) -> int:
    return len(segments(service))
