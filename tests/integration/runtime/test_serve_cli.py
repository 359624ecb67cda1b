"""`fpgaflow serve`, `python -m fpgaflow.fpga_runtime` and `fpgaflow score` as real processes."""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest

from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.graph_format import BLOCK_SIZE_METADATA_KEY, FORMAT_METADATA_KEY
from tests.fixtures.tiny_service import CLASS_NAMES, reference_probabilities

STARTUP_TIMEOUT = 120
EXIT_TIMEOUT = 60


class Node:
    """A serving process; ``address`` is what it printed in its 'listening on' line."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.address = self._wait_for("listening on ").removeprefix("listening on ")
        host, _, port = self.address.rpartition(":")
        self.host, self.port = host, int(port)

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _wait_for(self, prefix: str) -> str:
        while True:
            line = self.lines.get(timeout=STARTUP_TIMEOUT)
            if line is None:
                raise AssertionError(f"the node exited before printing {prefix!r}: {self.process.stderr.read()[-3000:]}")
            if line.startswith(prefix):
                return line

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(EXIT_TIMEOUT)
        return code, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(EXIT_TIMEOUT)


@pytest.fixture()
def image_files(images, tmp_path):
    paths = []
    for index, data in enumerate(images[:2]):
        path = tmp_path / f"photo-{index}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_fpgaflow_serve_then_score_then_sigterm(service_dir, images, image_files):
    node = Node(
        [
            sys.executable,
            "-m",
            "fpgaflow.flows",
            "serve",
            str(service_dir),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--device",
            "arria10",
        ]
    )
    try:
        assert node.host == "127.0.0.1" and node.port > 0
        assert node._wait_for("metrics on http://127.0.0.1:").endswith("/metrics")
        scored = subprocess.run(
            [sys.executable, "-m", "fpgaflow.flows", "score", *map(str, image_files), "--address", node.address],
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
        )
        assert scored.returncode == 0, scored.stderr
        expected = reference_probabilities(service_dir, images[:2])
        blocks = scored.stdout.strip().split("\n")
        assert blocks[0] == str(image_files[0]) and blocks[len(CLASS_NAMES) + 1] == str(image_files[1])
        for block_start, row in zip((0, len(CLASS_NAMES) + 1), expected):
            lines = blocks[block_start + 1 : block_start + 1 + len(CLASS_NAMES)]
            assert [line.split()[1] for line in lines] == [CLASS_NAMES[i] for i in np.argsort(-row)]
            assert [float(line.split()[0]) for line in lines] == pytest.approx(sorted(row, reverse=True), abs=1e-4)
        code, stderr = node.terminate()
        assert code == 0, stderr
        assert "draining in-flight calls" in stderr
    finally:
        node.kill()


def test_python_m_fpga_runtime_serves_the_same_node(service_dir, images):
    node = Node([sys.executable, "-m", "fpgaflow.fpga_runtime", str(service_dir), "--port", "0"])
    try:
        with PredictionClient(node.host, node.port) as client:
            np.testing.assert_allclose(
                client.score_image(images[0]), reference_probabilities(service_dir, images[:1])[0], rtol=1e-6
            )
        code, stderr = node.terminate()
        assert code == 0, stderr
    finally:
        node.kill()


def test_serve_reports_a_bad_service_directory_cleanly(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-m", "fpgaflow.fpga_runtime", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert finished.returncode == 2
    assert "service.json is missing" in finished.stderr and "Traceback" not in finished.stderr


def test_serve_refuses_a_graph_prepared_in_another_format_than_service_json_says(service_dir, tmp_path):
    mislabelled = shutil.copytree(service_dir, tmp_path / "mislabelled")
    featurizer = onnx.load(mislabelled / "featurizer.onnx")
    onnx.helper.set_model_props(featurizer, {FORMAT_METADATA_KEY: "msfp8", BLOCK_SIZE_METADATA_KEY: "16"})
    onnx.save(featurizer, mislabelled / "featurizer.onnx")
    finished = subprocess.run(
        [sys.executable, "-m", "fpgaflow.flows", "serve", str(mislabelled), "--port", "0", "--device", "arria10"],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert finished.returncode != 0 and "listening on" not in finished.stdout
    assert "featurizer.onnx: service.json declares numeric format 'fp32' but the graph was prepared in 'msfp8'" in (
        finished.stderr
    )
    assert "Traceback" not in finished.stderr


def test_score_reports_an_unreachable_server_with_its_status(image_files):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpgaflow.flows",
            "score",
            str(image_files[0]),
            "--address",
            f"127.0.0.1:{port}",
            "--retries",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert finished.returncode == 2
    assert "UNAVAILABLE" in finished.stderr and "Traceback" not in finished.stderr
