"""Detached server processes: started in their own session with a log file, recorded, checked and stopped.

A record names the pid and the exact command line a process was started with; a pid whose command line
differs (the process ended and the number was reused) is not ours and is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

HOST = "127.0.0.1"
POLL_SECONDS = 0.25


class StackError(Exception):
    """A team-stack command could not do what it was asked; the message says why and what to do."""


class ProcessRecord(BaseModel):
    pid: int
    command: list[str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections of a stopped server still closing, in TIME_WAIT, do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _command_line(pid: int) -> list[str] | None:
    """The live process's arguments, or None when it is gone or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if state == "Z" else arguments.decode(errors="replace").split("\0")[:-1]


def is_running(record: ProcessRecord | None) -> bool:
    return record is not None and _command_line(record.pid) == record.command


def start_detached(command: Sequence[str], environment: Mapping[str, str], log_path: Path) -> ProcessRecord:
    """Start ``command`` in a session of its own (it outlives this process), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ProcessRecord(pid=process.pid, command=list(command))


def log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(ready: Callable[[], bool], alive: Callable[[], bool], timeout: float, what: str, log_path: Path) -> None:
    """Poll ``ready`` until it holds; fail naming ``what`` and its log when the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive():
            raise StackError(f"{what} exited before it answered; the end of its log ({log_path}):\n{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"{what} did not answer within {timeout:.0f} s; the end of its log ({log_path}):\n{log_tail(log_path)}"
            )
        time.sleep(POLL_SECONDS)


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is still in the process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and _command_line(int(entry.name)) is not None:
                return True
        except ProcessLookupError:
            continue
    return False


def stop_if_running(record: ProcessRecord | None, grace: float = 20.0) -> bool:
    """SIGTERM to the recorded process's group (its workers too), SIGKILL after ``grace`` s; False if it was not running."""
    if record is None or not is_running(record):
        return False
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(record.pid, signum)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + grace
        while _group_alive(record.pid):
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        else:
            return True
    return True
