"""End-to-end pipeline time: ``fpgaflow run`` on the bundled sample data, in a home of its own."""

from __future__ import annotations

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
