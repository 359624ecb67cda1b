"""Commands about the emulated FPGA device: estimate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TABLE_COLUMNS = ("layer", "op", "MACs", "vector ops", "weights", "weight bytes", "output bytes", "cycles", "modelled")


def register(subparsers) -> None:
    estimate = subparsers.add_parser(
        "estimate",
        help="Per-layer MACs, weight bytes and modelled latency of a service's FPGA stages on a device profile.",
        description="Exit code 0 when every FPGA stage fits the device's on-chip memory, 1 when one does not.",
    )
    estimate.add_argument("service_dir", type=Path, metavar="SERVICE_DIR")
    estimate.add_argument(
        "--device",
        default=None,
        metavar="PROFILE",
        help="Device profile name (arria10, stratix10) or YAML path; default: the device_profile setting.",
    )
    estimate.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    estimate.set_defaults(handler=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    from fpgaflow.flows.cli import UsageError
    from fpgaflow.fpga_runtime.device import EmulatedDevice
    from fpgaflow.fpga_runtime.placement.cost import CostReport
    from fpgaflow.fpga_runtime.placement.fit import fpga_stage_reports
    from fpgaflow.fpga_runtime.profiles import load_profile
    from fpgaflow.fpga_runtime.service import Stage, load_service
    from fpgaflow.tasks.settings import get_pipeline_settings

    service = load_service(args.service_dir)
    profile = load_profile(args.device or get_pipeline_settings().device_profile)
    reports = fpga_stage_reports(service, args.service_dir, profile)
    if not reports:
        raise UsageError(f"service {service.name} has no FPGA stage to estimate")
    device = EmulatedDevice(profile)
    results: list[tuple[Stage, CostReport, float | None]] = []
    for stage, report in reports:
        if not report.fits:
            results.append((stage, report, None))
            continue
        device.load(args.service_dir / stage.file, stage.numeric_format)
        results.append((stage, device.cost, _measure_batch_1(device)))

    if args.json:
        print(
            json.dumps(
                {
                    "service": service.name,
                    "version": service.version,
                    "device": profile.name,
                    "stages": [
                        {"stage": stage.name, "file": stage.file, **report.to_dict(), "measured_seconds": measured}
                        for stage, report, measured in results
                    ],
                }
            )
        )
    else:
        print(
            f"service {service.name} {service.version} on device {profile.name} "
            f"({profile.clock_hz / 1e6:g} MHz, efficiency {profile.efficiency:g}, "
            f"{profile.onchip_memory_bytes:,} bytes on chip)"
        )
        for stage, report, measured in results:
            _print_stage(stage, profile, report, measured)
    return 0 if all(report.fits for _, report, _ in results) else 1


def _measure_batch_1(device) -> float:
    """Wall time of one batch-1 run after one warm-up run."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {
        item.name: rng.standard_normal([1 if dim is None else dim for dim in item.shape]).astype(item.dtype)
        for item in device.inputs
    }
    device.run(feeds)
    device.run(feeds)
    return device.stats().last_latency_seconds


def _print_stage(stage, profile, report, measured: float | None) -> None:
    graph, latency = report.graph, report.latency
    rows = [
        (
            layer.name,
            layer.op_type,
            f"{layer.macs:,}",
            f"{layer.vector_ops:,}",
            f"{layer.weight_params:,}",
            f"{layer.weight_bytes:,}",
            f"{layer.output_bytes:,}",
            f"{cycles:,}",
            _duration(cycles / latency.clock_hz),
        )
        for layer, cycles in zip(graph.layers, latency.layer_cycles)
    ]
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(TABLE_COLUMNS)]
    print(
        f"\nstage {stage.name} ({stage.file}) in {stage.numeric_format}: "
        f"{profile.macs_per_cycle(stage.numeric_format):,} MACs per cycle"
    )
    print(
        "  ".join(
            column.ljust(width) if index < 2 else column.rjust(width)
            for index, (column, width) in enumerate(zip(TABLE_COLUMNS, widths))
        )
    )
    for row in rows:
        print(
            "  ".join(
                cell.ljust(width) if index < 2 else cell.rjust(width) for index, (cell, width) in enumerate(zip(row, widths))
            )
        )
    share = graph.weight_bytes / report.onchip_memory_bytes
    print(
        f"total MACs: {graph.macs:,}   vector ops: {graph.vector_ops:,}   weights: {graph.weight_params:,} "
        f"at {graph.weight_bits:.3g} bits"
    )
    print(
        f"weight memory: {graph.weight_bytes:,} of {report.onchip_memory_bytes:,} bytes on chip ({share:.1%}): "
        + ("fits" if report.fits else "DOES NOT FIT")
    )
    print(
        f"modelled latency: {_duration(latency.seconds)} ({latency.compute_cycles:,} cycles = "
        f"{_duration(latency.compute_seconds)} compute + {_duration(latency.transfer_seconds)} host link for "
        f"{graph.input_bytes + graph.output_bytes:,} bytes)"
    )
    if measured is None:
        print("measured wall time: not run, the device refuses a model that does not fit")
    else:
        print(f"measured wall time (batch 1, emulated device on this CPU): {_duration(measured)}")


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"
