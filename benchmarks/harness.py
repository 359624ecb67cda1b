"""The benchmark run: every configuration measured side by side, targets judged, results written."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fpgaflow.benchmarks.measure import LevelResult, WindowPlan, measure_interleaved, measure_levels
from fpgaflow.tasks.settings import PipelineSettings


@dataclass(frozen=True)
class RunPlan:
    input_size: int
    levels: tuple[int, ...]
    windows: WindowPlan
    peak_matrix: int
    calibration_images: int
    emulation_repeats: int
    side_by_side_rounds: int
    pipeline: bool
    pipeline_per_class: int = 12
    pipeline_epochs: int = 2
    main_job: bool = True  # time the default main job from a cold home (with the pipeline)
    featurize_counts: tuple[int, ...] = (2_000, 20_000)  # synthetic images for the featurize-memory rows
    featurize_input_size: int = 64


FULL = RunPlan(
    input_size=224,
    levels=(1, 2, 4, 8),
    windows=WindowPlan(warmup_seconds=3.0, window_seconds=5.0, max_windows=8),
    peak_matrix=1024,
    calibration_images=16,
    emulation_repeats=40,
    side_by_side_rounds=30,
    pipeline=True,
)
QUICK = RunPlan(
    input_size=32,
    levels=(1, 2),
    windows=WindowPlan(warmup_seconds=0.3, window_seconds=0.5, max_windows=4),
    peak_matrix=256,
    calibration_images=2,
    emulation_repeats=3,
    side_by_side_rounds=3,
    pipeline=False,
)


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    comparison: str  # "<=" or ">="
    meaning: str

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.comparison == "<=" else self.value >= self.limit

    def to_dict(self) -> dict:
        return {**asdict(self), "pass": self.passed}


EMULATED_FORMATS = ("msfp9", "msfp8")
EMULATION_SPEED_LIMIT = 1.3  # an msfp featurizer's batch-1 latency over the same graph's in fp32


def _same_request(request: Callable[[], object]) -> Callable[[], Callable[[], object]]:
    """A request factory that gives every concurrency level the same request callable."""
    return lambda: request


def judge_targets(results: dict) -> list[Target]:
    """The issue's targets from measured results: latency ratios from the side-by-side (interleaved) p50s,
    load behaviour from the windowed measurements."""
    c1 = results["side_by_side"]
    int8 = results["configurations"]["gateway int8"]
    floor = results["machine_limit"]["int8_floor_ms"]
    memory = results["memory_mb"]
    return [
        Target(
            "serving overhead",
            c1["gateway int8"]["p50_ms"] / c1["onnxruntime int8 in-process"]["p50_ms"],
            1.15,
            "<=",
            "int8 gateway p50 / in-process preprocess + onnxruntime int8 p50",
        ),
        Target(
            "ahead of TensorFlow",
            c1["gateway int8"]["p50_ms"] / c1["tensorflow in-process"]["p50_ms"],
            0.25,
            "<=",
            "int8 gateway p50 / in-process TensorFlow p50",
        ),
        Target("near the limit", c1["gateway int8"]["p50_ms"] / floor, 3.0, "<=", "int8 gateway p50 / int8 latency floor"),
        Target(
            "throughput under load",
            int8[-1]["throughput_per_second"] / int8[0]["throughput_per_second"],
            1.0,
            ">=",
            f"int8 gateway throughput at concurrency {int8[-1]['concurrency']} / at concurrency 1",
        ),
        Target(
            "tail at concurrency 1", int8[0]["p99_ms"] / int8[0]["p50_ms"], 2.0, "<=", "int8 gateway p99 / p50 at concurrency 1"
        ),
        Target(
            "msfp9 emulation usable",
            c1["gateway msfp9"]["p50_ms"] / c1["gateway fp32"]["p50_ms"],
            2.5,
            "<=",
            "msfp9 gateway p50 / fp32 gateway p50",
        ),
        *[
            Target(
                f"{name} emulation speed",
                results["fpga_emulation"][name]["vs_fp32"],
                EMULATION_SPEED_LIMIT,
                "<=",
                f"{name} featurizer p50 / fp32 featurizer p50 (batch 1, in-process onnxruntime, interleaved runs)",
            )
            for name in EMULATED_FORMATS
        ],
        Target("int8 node memory", memory["node int8"], 500.0, "<=", "peak RSS of the ResNet-50 int8 node, MB"),
        Target("gateway memory", memory["gateway"], 200.0, "<=", "peak RSS of the gateway, MB"),
    ]


def _levels(results: list[LevelResult]) -> list[dict]:
    return [result.to_dict() for result in results]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_benchmark(out: Path, plan: RunPlan, settings: PipelineSettings) -> dict:
    """Measure everything ``plan`` asks for; write results.json, results.md and the charts into ``out``."""
    import json

    from fpgaflow.benchmarks.inprocess import onnxruntime_request, tensorflow_request
    from fpgaflow.benchmarks.machine import best_peak, machine_info, measure_peak
    from fpgaflow.benchmarks.pipeline import featurize_memory, time_detection_pipeline, time_main_job, time_pipeline
    from fpgaflow.benchmarks.report import write_charts, write_markdown
    from fpgaflow.benchmarks.serving import BenchCluster
    from fpgaflow.benchmarks.subjects import FORMATS, build_subjects
    from fpgaflow.fpga_runtime.placement.cost import cost_report
    from fpgaflow.fpga_runtime.preprocessing import preprocess
    from fpgaflow.fpga_runtime.profiles import load_profile
    from fpgaflow.tasks.numerics.formats import OnnxFeatureExtractor, batch1_latency_p50

    out = Path(out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"home": work / "home"})
    started = time.perf_counter()
    machine = machine_info()
    _log(f"machine: {machine.describe()}")

    _log("peak matrix multiply")
    peak = measure_peak(plan.peak_matrix)
    _log(f"building ResNet-50 at {plan.input_size} px and packaging {', '.join(FORMATS)}")
    subjects = build_subjects(work, plan.input_size, settings, calibration_count=plan.calibration_images)
    configurations: dict[str, list[dict]] = {}
    in_process = {"tensorflow in-process": tensorflow_request(subjects.keras_model, subjects.jpeg, subjects.spec)}
    for name in ("fp32", "int8"):
        in_process[f"onnxruntime {name} in-process"] = onnxruntime_request(
            subjects.featurizer_onnx[name], subjects.head_onnx, subjects.jpeg, subjects.spec
        )
    for name, request in in_process.items():
        _log(name)
        configurations[name] = _levels(measure_levels(_same_request(request), (1,), plan.windows))

    memory: dict[str, float] = {}
    deployment: dict[str, dict] = {}
    with BenchCluster(subjects.services, settings) as cluster:
        for name in FORMATS:
            _log(f"gateway {name} at concurrency {plan.levels}")
            configurations[f"gateway {name}"] = _levels(
                measure_levels(functools.partial(cluster.request, name, subjects.jpeg), plan.levels, plan.windows)
            )
            memory[f"node {name}"] = cluster.peak_rss_mb(name)
            deployment[name] = asdict(cluster.deployed[name]) | {
                "service_dir": os.path.relpath(cluster.deployed[name].service_dir, out)
            }
        memory["gateway"] = cluster.gateway_peak_rss_mb()
        _log(f"side by side at concurrency 1, {plan.side_by_side_rounds} interleaved rounds")
        side_by_side = measure_interleaved(
            {**in_process, **{f"gateway {name}": cluster.request(name, subjects.jpeg) for name in FORMATS}},
            plan.side_by_side_rounds,
        )
    _log("peak matrix multiply again (the best of both is the peak)")
    peak = best_peak(peak, measure_peak(plan.peak_matrix))

    _log("modelled FPGA latency vs measured emulation")
    profile = load_profile(settings.device_profile)
    image = preprocess(subjects.jpeg, subjects.spec)
    measured = batch1_latency_p50(
        {name: OnnxFeatureExtractor(path) for name, path in subjects.featurizer_onnx.items()}, image, plan.emulation_repeats
    )
    emulation = {}
    for name, path in subjects.featurizer_onnx.items():
        report = cost_report(path, name, profile)
        emulation[name] = {
            "modelled_device_ms": report.latency.seconds * 1000,
            "measured_emulation_ms": measured[name],
            "vs_fp32": measured[name] / measured["fp32"],
            "fits_one_device": report.fits,
            "weight_mb": report.graph.weight_bytes / 1e6,
        }
    macs = cost_report(subjects.featurizer_onnx["fp32"], "fp32", profile).graph.macs

    pipeline = None
    if plan.pipeline:
        _log("end-to-end pipeline on the sample digits")
        pipeline = time_pipeline(work, 64, plan.pipeline_per_class, plan.pipeline_epochs).to_dict()
        pipeline["log"] = os.path.relpath(pipeline["log"], out)
        pipeline["runs"] = []
        if plan.main_job:
            _log("the default main job from a cold home")
            pipeline["runs"].append(time_main_job(work))
        _log(f"featurize + numerics path on {', '.join(map(str, plan.featurize_counts))} synthetic images")
        pipeline["runs"] += featurize_memory(work, plan.featurize_counts, plan.featurize_input_size)
        pipeline["runs"] = [run.to_dict() | {"log": os.path.relpath(run.log, out)} for run in pipeline["runs"]]
    detection_pipeline = None
    if plan.pipeline:
        _log("default detection run on the sample detection data")
        detection_pipeline = time_detection_pipeline(work).to_dict()
        detection_pipeline["log"] = os.path.relpath(detection_pipeline["log"], out)

    results: dict[str, Any] = {
        "machine": machine.to_dict() | {"description": machine.describe()},
        "plan": {
            "input_size": plan.input_size,
            "levels": list(plan.levels),
            "windows": asdict(plan.windows),
            "device_profile": profile.name,
            "ort_intra_op_threads": settings.ort_intra_op_threads,
        },
        "model": {
            "featurizer": "resnet50",
            "weights": "none (seeded)",
            "input_size": plan.input_size,
            "macs": macs,
            "parameters": subjects.parameters,
            "classes": 10,
            "request_jpeg_bytes": len(subjects.jpeg),
            "build_seconds": subjects.timings_seconds,
        },
        "machine_limit": {
            **peak.to_dict(),
            "fp32_floor_ms": peak.floor_ms(macs, integer=False),
            "int8_floor_ms": peak.floor_ms(macs, integer=True),
        },
        "configurations": configurations,
        "side_by_side": side_by_side,
        "deployment": deployment,
        "memory_mb": memory,
        "fpga_emulation": emulation,
        "pipeline": pipeline,
        "detection_pipeline": detection_pipeline,
    }
    results["targets"] = [target.to_dict() for target in judge_targets(results)]
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / "results.md")
    write_charts(results, out)
    return results
