"""The pipeline rows of the bench: synthetic images, a command's peak RSS, the table in results.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from fpgaflow import benchmarks
from fpgaflow.benchmarks.featurize_memory import SYNTHETIC_CLASSES, write_synthetic_images
from fpgaflow.benchmarks.pipeline import run_measured
from fpgaflow.benchmarks.report import markdown
from fpgaflow.tasks.data.manifest import build_manifest


def test_synthetic_images_are_decodable_jpegs_in_one_folder_per_class(tmp_path):
    assert write_synthetic_images(tmp_path, 25, 48, seed=1) == 25
    manifest = build_manifest(tmp_path)
    assert len(manifest) == 25 and manifest["label"].nunique() == SYNTHETIC_CLASSES
    with Image.open(manifest["path"].iloc[0]) as image:
        assert (image.format, image.size) == ("JPEG", (48, 48))


def test_peak_rss_of_a_command_that_holds_memory(tmp_path):
    out = tmp_path / "peak"
    holds_200_mb = "import numpy; a = numpy.ones(200 * 2**20 // 8); print(a.sum())"
    # In a process of its own, as the bench runs it: a process's children's peak covers every child it waited for.
    measure = [sys.executable, "-m", "fpgaflow.benchmarks.peak_rss", str(out), "--", sys.executable, "-c"]
    assert subprocess.run([*measure, holds_200_mb]).returncode == 0
    assert 200 <= float(out.read_text()) < 2000
    assert subprocess.run([*measure, "raise SystemExit(3)"]).returncode == 3


def test_run_measured_reports_exit_code_seconds_and_peak(tmp_path):
    code, seconds, peak = run_measured([sys.executable, "-c", "print('hi')"], tmp_path / "home", tmp_path / "run.log")
    assert code == 0 and seconds > 0 and peak > 0 and (tmp_path / "run.log").read_text().strip() == "hi"


def test_results_md_lists_the_runs():
    results = json.loads((Path(benchmarks.__file__).parent / "results" / "results.json").read_text())
    results["pipeline"] = {
        "command": "fpgaflow run sample-digits",
        "images": 120,
        "seconds": 60.0,
        "exit_code": 0,
        "runs": [{"what": "featurize + numerics", "images": 2000, "seconds": 90.0, "peak_rss_mb": 1500.0, "exit_code": 0}],
    }
    assert "| featurize + numerics | 2000 | 90 | 1500 | 0 |" in markdown(results)
