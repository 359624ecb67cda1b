"""Daemon processes of the local cluster (gateway, nodes): start detached, await readiness, stop, watch.

A process is started in a session of its own, so it outlives the command that started it; its
stderr goes to a log file and its stdout is read until it prints ``listening on HOST:PORT`` (what
``python -m fpgaflow.fpga_runtime``, ``python -m fpgaflow.fpga_runtime.chain`` and the gateway print once they
answer), then copied to the log. Exits are awaited through a pidfd where the platform has one,
so waiting never needs a sleep.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from fpgaflow.fpga_runtime.errors import FpgaflowError

LISTENING = "listening on "
EXIT_POLL_SECONDS = 0.05  # only where no pidfd exists


def spawn(command: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` detached (own session), stderr appended to ``log_path``, stdout piped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
            env=env,
        )


def wait_until_listening(process: subprocess.Popen, timeout: float, log_path: Path, what: str) -> str:
    """The ``HOST:PORT`` the process prints once ready; the process is killed when it does not get there."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_relay_stdout, args=(process, lines, log_path), name=f"stdout-{process.pid}", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            terminate(process.pid, 0, process)
            raise FpgaflowError(f"{what} was not ready within {timeout:g} s; its log {log_path}:\n{log_tail(log_path)}") from None
        if line is None:
            code = process.wait()
            raise FpgaflowError(f"{what} exited with code {code} before it was ready; its log {log_path}:\n{log_tail(log_path)}")
        if line.startswith(LISTENING):
            return line[len(LISTENING) :].strip()


def _relay_stdout(process: subprocess.Popen, lines: queue.Queue, log_path: Path) -> None:
    """Hand stdout lines to the waiter and copy them to the log, until the process closes its stdout."""
    stdout = process.stdout
    assert stdout is not None  # spawn pipes stdout
    with stdout, open(log_path, "a", encoding="utf-8") as log_file:
        for raw in stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.put(line)
            log_file.write(line + "\n")
            log_file.flush()
    lines.put(None)


def log_tail(path: Path, count: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-count:])
    except OSError:
        return "(no log)"


def pid_alive(pid: int | None) -> bool:
    """The process exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def command_line(pid: int) -> str:
    """The process's command line ('' where /proc is not available)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def wait_for_exit(pid: int, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """Wait until ``pid`` has exited (reaping it when it is our child); False on timeout."""
    if process is not None:
        try:
            process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        descriptor = None
    if descriptor is not None:
        try:
            readable, _, _ = select.select([descriptor], [], [], max(0.0, deadline - time.monotonic()))
            return bool(readable)
        finally:
            os.close(descriptor)
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(EXIT_POLL_SECONDS)
    return True


def terminate(pid: int | None, grace: float, process: subprocess.Popen | None = None) -> None:
    """SIGTERM, up to ``grace`` seconds to finish, then SIGKILL."""
    if not pid:
        return
    for signal_number, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            break
        if wait_for_exit(pid, wait, process):
            break
    if process is not None and process.poll() is None:
        process.wait(5)
