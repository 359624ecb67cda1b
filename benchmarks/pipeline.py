"""End-to-end pipeline time: ``fpgaflow run`` on the bundled sample data, in a home of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    environment = {**os.environ, "FPGAFLOW_HOME": str(home)}
    log = work / "pipeline.log"
    start = time.perf_counter()
    with open(log, "wb") as log_file:
        code = subprocess.run(
            command, env=environment, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    seconds = time.perf_counter() - start
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
class DetectionPipelineTiming:
    seconds: float
    peak_rss_mb: float  # largest resident set of the run's process tree, as the kernel accounts children
    images: int
    map50: float | None  # test mAP@0.5 from the run's --json summary
    command: str
    exit_code: int
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


def time_detection_pipeline(work: Path, seed: int = 7) -> DetectionPipelineTiming:
    """Write the sample detection data (300 images) and time the default detector run through packaging on it."""
    from fpgaflow.tasks.detection.intake import IMAGES_DIR
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    data = work / "digit-boxes"
    write_detection_sample_data(data)
    command = [sys.executable, "-m", "fpgaflow.flows", "run", str(data), "--until", "package", "--featurizer", "ssd_vgg"]
    command += ["--weights", "none", "--seed", str(seed), "--json"]
    environment = {**os.environ, "FPGAFLOW_HOME": str(work / "detection-home")}
    log, summary = work / "detection-pipeline.log", work / "detection-pipeline.json"
    start = time.perf_counter()
    with open(log, "wb") as log_file, open(summary, "wb") as summary_file:
        process = subprocess.Popen(command, env=environment, stdout=summary_file, stderr=log_file, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own resource usage, its peak RSS included
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    lines = [line for line in summary.read_text(errors="replace").splitlines() if line.startswith("{")]
    metrics = json.loads(lines[-1]).get("metrics", {}) if lines else {}
    return DetectionPipelineTiming(
        seconds=seconds,
        peak_rss_mb=usage.ru_maxrss / 1024,
        images=sum(1 for _ in (data / IMAGES_DIR).iterdir()),
        map50=metrics.get("map50"),
        command=" ".join(["fpgaflow", *command[3:]]).replace(str(data), "digit-boxes"),
        exit_code=process.returncode,
        log=str(log),
    )
