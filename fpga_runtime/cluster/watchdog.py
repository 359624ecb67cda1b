"""Keeps a cluster's gateway running: ``python -m fpgaflow.fpga_runtime.cluster.watchdog DAEMON-ARGUMENTS...``.

Runs ``python -m fpgaflow.fpga_runtime.cluster.daemon DAEMON-ARGUMENTS`` as its child and copies the
child's stdout (``listening on HOST:PORT``) to its own. When the gateway dies (killed, crashed)
it starts it again on the port it first listened on, so clients find it at the same address, and
the new gateway re-adopts the nodes and placements of the saved state. Quick deaths in a row wait
longer each time (the restart back-off setting, doubled, at most 30 s). A clean exit of the gateway
(SIGTERM, ``fpgaflow cluster down``) or a refusal to start (exit code 2: a configuration error, or
another gateway holds the cluster) ends the watchdog too. SIGTERM or SIGINT to the watchdog stop
the gateway cleanly and then the watchdog.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from fpgaflow.fpga_runtime.cluster.processes import LISTENING
from fpgaflow.fpga_runtime.settings import get_settings

log = logging.getLogger("fpgaflow.fpga_runtime.cluster.watchdog")
REFUSED_TO_START = 2
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0  # a gateway that lived this long died "for the first time" again


def restart_arguments(arguments: list[str], address: str | None) -> list[str]:
    """The daemon's arguments with ``--port`` set to the port of ``address`` (the one it first listened on)."""
    if address is None:
        return list(arguments)
    port = address.rsplit(":", 1)[1]
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument == "--port":
            skip = True
            continue
        if argument.startswith("--port="):
            continue
        kept.append(argument)
    return kept + ["--port", port]


def next_backoff(current: float, lived_seconds: float, first: float) -> float:
    """The wait before the next restart: back to ``first`` after a long life, doubled after a quick death."""
    if lived_seconds >= STABLE_SECONDS:
        return first
    return min(MAX_BACKOFF_SECONDS, current * 2)


class Watchdog:
    def __init__(self, daemon_arguments: Sequence[str], first_backoff: float) -> None:
        self.arguments = list(daemon_arguments)
        self.first_backoff = first_backoff
        self.address: str | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._child: subprocess.Popen | None = None
        self._stdout_open = True

    def stop(self, *_signal_info) -> None:
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        backoff = self.first_backoff
        while True:
            started = time.monotonic()
            code = self._run_child(restart_arguments(self.arguments, self.address))
            lived = time.monotonic() - started
            if self._stop.is_set() or code == 0 or code == REFUSED_TO_START or self.address is None:
                return code
            self.restarts += 1
            backoff = self.first_backoff if self.restarts == 1 else next_backoff(backoff, lived, self.first_backoff)
            log.warning(
                "the gateway at %s exited with code %s after %.1f s; restart %d in %.2f s",
                self.address,
                code,
                lived,
                self.restarts,
                backoff,
            )
            if self._stop.wait(backoff):
                return 0

    def _run_child(self, arguments: list[str]) -> int:
        command = [sys.executable, "-m", "fpgaflow.fpga_runtime.cluster.daemon", *arguments, "--watchdog-pid", str(os.getpid())]
        self._child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        if self._stop.is_set():  # a stop that came while the child was being started
            self._child.send_signal(signal.SIGTERM)
        stdout = self._child.stdout
        assert stdout is not None  # the child's stdout is piped
        for raw in stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(LISTENING) and self.address is None:
                self.address = line[len(LISTENING) :].strip()
            self._relay(line)
        stdout.close()
        return self._child.wait()

    def _relay(self, line: str) -> None:
        """Copy a line to our stdout while someone reads it (the command that started us may be gone)."""
        if not self._stdout_open:
            return
        try:
            print(line, flush=True)
        except (BrokenPipeError, ValueError, OSError):
            self._stdout_open = False


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = list(sys.argv[1:] if argv is None else argv)
    watchdog = Watchdog(arguments, get_settings().cluster_gateway_restart_backoff_seconds)
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, watchdog.stop)
    return watchdog.run()


if __name__ == "__main__":
    sys.exit(main())
