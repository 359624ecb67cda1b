"""End-to-end pipeline time: ``fpgaflow run`` on the bundled sample data, in a home of its own; the default
main job's time and peak RSS from a cold home; peak RSS of the featurize + numerics path at two dataset sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fpgaflow.tasks.settings import PipelineSettings


@dataclass(frozen=True)
class PipelineTiming:
    seconds: float
    images: int
    input_size: int
    command: str
    exit_code: int
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


def time_pipeline(work: Path, input_size: int, per_class: int, epochs: int) -> PipelineTiming:
    """Write the sample digits (``per_class`` per class) and time ``fpgaflow run`` through deploy on them."""
    from fpgaflow.fpga_runtime.cluster.daemon import gateway_running, stop_cluster
    from fpgaflow.tasks.data.sample_data import write_sample_data

    data = work / "sample-digits"
    counts = write_sample_data(data, size=input_size, per_class=per_class)
    home = work / "pipeline-home"
    command = [
        sys.executable,
        "-m",
        "fpgaflow.flows",
        "run",
        str(data),
        "--featurizer",
        "resnet50",
        "--weights",
        "none",
        "--input-size",
        str(input_size),
        "--epochs",
        str(epochs),
        "--numerics",
        "fp32,int8",
        "--target",
        "local",
        "--json",
    ]
    log = work / "pipeline.log"
    code, seconds, _ = run_measured(command, home, log)
    pipeline_settings = PipelineSettings(home=home)
    if gateway_running(pipeline_settings):
        stop_cluster(pipeline_settings)
    shown = ["fpgaflow", *command[3:]]
    return PipelineTiming(
        seconds=seconds,
        images=sum(counts.values()),
        input_size=input_size,
        command=" ".join(shown).replace(str(data), "sample-digits"),
        exit_code=code,
        log=str(log),
    )


@dataclass(frozen=True)
class MeasuredRun:
    """One command's wall time and peak RSS (the largest of its processes), in a home of its own."""

    what: str
    images: int
    seconds: float
    peak_rss_mb: float
    exit_code: int
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DetectionPipelineTiming:
    seconds: float
    peak_rss_mb: float
    images: int
    map50: float | None  # test mAP@0.5 from the run's --json summary
    command: str
    exit_code: int
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


def run_measured(command: Sequence[str], home: Path, log: Path) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS MB) of ``command`` run with ``FPGAFLOW_HOME=home``, its output into ``log``."""
    peak_file = log.with_suffix(".peak-rss")
    wrapped = [sys.executable, "-m", "fpgaflow.benchmarks.peak_rss", str(peak_file), "--", *command]
    environment = {**os.environ, "FPGAFLOW_HOME": str(home)}
    start = time.perf_counter()
    with open(log, "wb") as log_file:
        code = subprocess.run(
            wrapped, env=environment, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    seconds = time.perf_counter() - start
    peak = float(peak_file.read_text()) if peak_file.is_file() else float("nan")
    return code, seconds, peak


def time_main_job(work: Path) -> MeasuredRun:
    """The default main job (sample digits, every default, until package) from a cold home."""
    from fpgaflow.tasks.data.sample_data import write_sample_data

    data = work / "main-job-digits"
    counts = write_sample_data(data)
    command = [sys.executable, "-m", "fpgaflow.flows", "run", str(data), "--until", "package", "--json"]
    code, seconds, peak = run_measured(command, work / "main-job-home", work / "main-job.log")
    return MeasuredRun(
        "fpgaflow run sample-digits --until package", sum(counts.values()), seconds, peak, code, str(work / "main-job.log")
    )


def featurize_memory(
    work: Path, counts: Sequence[int], input_size: int, numerics: str = "fp32,int8", warm_up_images: int = 100
) -> list[MeasuredRun]:
    """Peak RSS of the train, conversion and numerics steps on ``counts`` synthetic images each.

    A first run on ``warm_up_images`` images converts the featurizer (tf2onnx's peak does not depend on
    the data; it is the first row); each size then runs in a process of its own in that home, its
    features computed from scratch (other images), so its peak is the path's own.
    """
    from fpgaflow.benchmarks.featurize_memory import write_synthetic_images

    home = work / "featurize-memory-home"
    runs = []
    for seed, count in enumerate([warm_up_images, *counts]):
        data = work / f"synthetic-{count}"
        write_synthetic_images(data, count, input_size, seed=seed)
        log = work / f"featurize-memory-{count}.log"
        command = [
            sys.executable,
            "-m",
            "fpgaflow.benchmarks.featurize_memory",
            str(data),
            "--input-size",
            str(input_size),
            "--numerics",
            numerics,
        ]
        code, seconds, peak = run_measured(command, home, log)
        if code == 0:
            seconds = _last_json_line(log)["seconds"]
        what = f"featurize + numerics ({numerics}) at {input_size} px"
        runs.append(
            MeasuredRun(what + (", converting the featurizer" if seed == 0 else ""), count, seconds, peak, code, str(log))
        )
    return runs


def _last_json_line(log: Path) -> dict:
    return json.loads(next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{")))


def time_detection_pipeline(work: Path, seed: int = 7) -> DetectionPipelineTiming:
    """Write the sample detection data (300 images) and time the default detector run through packaging on it."""
    from fpgaflow.tasks.detection.intake import IMAGES_DIR
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    data = work / "digit-boxes"
    write_detection_sample_data(data)
    command = [sys.executable, "-m", "fpgaflow.flows", "run", str(data), "--until", "package", "--featurizer", "ssd_vgg"]
    command += ["--weights", "none", "--seed", str(seed), "--json"]
    log = work / "detection-pipeline.log"
    code, seconds, peak = run_measured(command, work / "detection-home", log)
    metrics = _last_json_line(log).get("metrics", {}) if code == 0 else {}
    return DetectionPipelineTiming(
        seconds=seconds,
        peak_rss_mb=peak,
        images=sum(1 for _ in (data / IMAGES_DIR).iterdir()),
        map50=metrics.get("map50"),
        command=" ".join(["fpgaflow", *command[3:]]).replace(str(data), "digit-boxes"),
        exit_code=code,
        log=str(log),
    )
