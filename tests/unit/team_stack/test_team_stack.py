"""The team stack without servers: finding PostgreSQL, the records that make `down` stop only what `up` started,
port reuse, and the command's answers for a stack that was never started."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from fpgaflow.flows.cli import main
from fpgaflow.flows.team_stack import processes
from fpgaflow.flows.team_stack.postgres import find_bin_dir, unprivileged_user
from fpgaflow.flows.team_stack.processes import ProcessRecord, StackError
from fpgaflow.flows.team_stack.stack import StackState, TeamStack
from fpgaflow.tasks.settings import PipelineSettings


def test_a_configured_postgres_folder_without_its_programs_is_named(tmp_path):
    with pytest.raises(StackError, match=rf"FPGAFLOW_POSTGRES_BIN_DIR={tmp_path} has no initdb and pg_ctl.*scripts/setup"):
        find_bin_dir(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the user PostgreSQL runs as matters only to root")
def test_as_root_a_missing_postgres_user_is_named(tmp_path):
    with pytest.raises(StackError, match="refuses to run as root and there is no user 'nobody-here'"):
        unprivileged_user(PipelineSettings(home=tmp_path, postgres_user="nobody-here"))


def test_down_stops_the_recorded_process_group_and_never_a_pid_whose_command_differs(tmp_path):
    command = [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]
    record = processes.start_detached(command, os.environ, tmp_path / "sleeper.log")
    impostor = ProcessRecord(pid=record.pid, command=[*command, "--other"])
    assert processes.is_running(record) and not processes.is_running(impostor)

    assert processes.stop_if_running(impostor) is False and processes.is_running(record)
    assert processes.stop_if_running(record) is True
    assert not processes.is_running(record) and not processes._group_alive(record.pid)
    assert processes.stop_if_running(record) is False


def test_up_keeps_a_service_port_while_it_is_free(tmp_path):
    stack = TeamStack(tmp_path, PipelineSettings(home=tmp_path))
    free = processes.free_port()
    assert stack._port(StackState(ports={"mlflow": free}), "mlflow") == free
    with socket.socket() as taken:
        taken.bind((processes.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert stack._port(StackState(ports={"mlflow": port}), "mlflow") != port


def test_status_of_a_stack_never_started_and_services_named_to_up(tmp_path, capsys):
    assert main(["team-stack", "status", "--dir", str(tmp_path / "stack")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [[name, "stopped", "never"] for name in ("postgres", "mlflow", "prefect")]
    assert not (tmp_path / "stack").exists()

    assert main(["team-stack", "up", "mlflow", "--dir", str(tmp_path / "stack")]) == 2
    assert capsys.readouterr().err.strip() == "fpgaflow team-stack: error: services are named only to down, not to up"
    assert main(["team-stack", "down", "--dir", str(tmp_path / "stack")]) == 0
    assert capsys.readouterr().out.strip() == f"nothing of the stack in {Path(tmp_path / 'stack')} was running"
