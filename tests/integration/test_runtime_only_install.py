"""The serving runtime installs and imports with its own small dependency set only."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "prefect", "mlflow", "great_expectations", "pandas", "docker", "tf2onnx")

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
from fpgaflow import fpga_runtime
prefix = "fpgaflow.fpga_runtime."
names = [m.name for m in pkgutil.walk_packages(fpga_runtime.__path__, prefix) if m.name != prefix + "__main__"]
for name in names:
    importlib.import_module(name)
heavy = %r
print(json.dumps({"modules": names,
                  "imported_heavy": [h for h in heavy if h in sys.modules],
                  "installed_heavy": [h for h in heavy if importlib.util.find_spec(h) is not None]}))
"""


@pytest.mark.slow
def test_runtime_installs_and_imports_without_the_pipeline_stack(tmp_path):
    environment = tmp_path / "runtime-venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    probe = subprocess.run(
        [str(python), "-c", IMPORT_EVERYTHING % (HEAVY,)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert "fpgaflow.fpga_runtime.preprocessing" in report["modules"] and "fpgaflow.fpga_runtime.service" in report["modules"]
    assert report["imported_heavy"] == []
    assert report["installed_heavy"] == []

    cli = subprocess.run([str(environment / "bin" / "fpgaflow"), "--help"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "run" in cli.stdout
    assert sys.version_info >= (3, 11)
