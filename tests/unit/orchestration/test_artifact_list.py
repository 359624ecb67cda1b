"""README's "The pipeline" names exactly the artifacts the pipeline's steps publish for every model kind."""

from __future__ import annotations

import re
from pathlib import Path

from fpgaflow.tasks.artifacts import PIPELINE_ARTIFACTS

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_the_pipeline_artifacts_in_step_order():
    section = README.read_text().split("## The pipeline", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"Every step leaves a Prefect artifact with a stable key \(([^)]*)\)", section, re.S)
    assert listed, "README's pipeline section no longer says which artifacts every step leaves"
    assert tuple(re.findall(r"`([a-z0-9-]+)`", listed.group(1))) == PIPELINE_ARTIFACTS
