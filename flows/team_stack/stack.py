"""`up`, `down` and `status` of the team stack in one folder.

``DIR/stack.json`` records the port and the started process of each service. ``up`` starts what is not
running, on the port it had before when that port is still free (so URLs, and the pipeline's cache keys
that include the tracking URI, stay the same across restarts); ``down`` stops only processes it recorded.
Everything the services keep lives under ``DIR``: PostgreSQL's cluster (``postgres/``), MLflow's artifacts
(``artifacts/``), the Prefect server's home (``prefect/``) and the logs (``logs/``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from fpgaflow.flows.team_stack import processes
from fpgaflow.flows.team_stack.postgres import PostgresCluster, find_bin_dir, read_or_make_password, unprivileged_user
from fpgaflow.flows.team_stack.processes import ProcessRecord, StackError
from fpgaflow.flows.team_stack.servers import ServerSpec, mlflow_server, prefect_server
from fpgaflow.tasks.files import write_text_atomic
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

POSTGRES, MLFLOW, PREFECT = "postgres", "mlflow", "prefect"
SERVICES = (POSTGRES, MLFLOW, PREFECT)
SERVERS = (MLFLOW, PREFECT)
SERVER_START_TIMEOUT_SECONDS = 300.0
PURPOSE = {
    POSTGRES: "the database of both servers",
    MLFLOW: "runs, metrics, the model registry (versions, aliases, model cards) and their artifacts",
    PREFECT: "flow runs, task runs, Prefect artifacts, schedules and automations",
}


class StackState(BaseModel):
    ports: dict[str, int] = {}
    processes: dict[str, ProcessRecord] = {}


class ServiceStatus(BaseModel):
    name: str
    running: bool
    port: int | None
    pid: int | None
    url: str
    purpose: str


class TeamStack:
    def __init__(self, directory: Path, settings: PipelineSettings | None = None):
        self.directory = directory.expanduser().absolute()
        self.settings = settings or get_pipeline_settings()

    # -- what is where --------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.directory / "stack.json"

    def log_path(self, service: str) -> Path:
        return self.directory / "logs" / f"{service}.log"

    def load_state(self) -> StackState:
        if not self.state_path.exists():
            return StackState()
        return StackState.model_validate_json(self.state_path.read_text())

    def save_state(self, state: StackState) -> None:
        write_text_atomic(self.state_path, state.model_dump_json(indent=2))

    def postgres(self) -> PostgresCluster:
        return PostgresCluster(
            root=self.directory / "postgres",
            password=read_or_make_password(self.directory / "postgres.password"),
            bin_dir=find_bin_dir(self.settings.postgres_bin_dir),
            user=unprivileged_user(self.settings),
        )

    def server_spec(self, service: str, state: StackState, cluster: PostgresCluster) -> ServerSpec:
        port, database_port = state.ports[service], state.ports[POSTGRES]
        if service == MLFLOW:
            return mlflow_server(port, cluster.uri(database_port, MLFLOW), self.directory / "artifacts")
        return prefect_server(port, cluster.uri(database_port, PREFECT, "postgresql+asyncpg"), self.directory / "prefect")

    # -- commands ---------------------------------------------------------------------------------
    def up(self) -> list[ServiceStatus]:
        """Start whatever of the stack is not running; returns the status of all three."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = self.load_state()
        cluster = self.postgres()
        if not cluster.initialised():
            cluster.initialise()
        database_port = state.ports.get(POSTGRES)
        if not cluster.running():
            cluster.start(self._port(state, POSTGRES))
        state.processes[POSTGRES], state.ports[POSTGRES] = cluster.record()
        self.save_state(state)
        if database_port not in (None, state.ports[POSTGRES]):  # its old port was taken: servers still on it restart
            for service in SERVERS:
                processes.stop_if_running(state.processes.get(service))
        cluster.ensure_databases(state.ports[POSTGRES], SERVERS)
        starting = []
        for service in SERVERS:
            if processes.is_running(state.processes.get(service)):
                continue
            state.ports[service] = self._port(state, service)
            spec = self.server_spec(service, state, cluster)
            state.processes[service] = processes.start_detached(spec.command, spec.environment, self.log_path(service))
            self.save_state(state)
            starting.append(spec)
        for spec in starting:
            self._wait_until_ready(spec, state.processes[spec.name])
        return self.status()

    def down(self, services: Iterable[str] = SERVICES) -> list[str]:
        """Stop the named services (servers before their database) that this stack started; returns those it stopped."""
        wanted = set(services)
        state = self.load_state()
        stopped = [
            service for service in SERVERS if service in wanted and processes.stop_if_running(state.processes.get(service))
        ]
        if POSTGRES in wanted and (self.directory / "postgres" / "data").is_dir():
            cluster = self.postgres()
            if cluster.running():
                cluster.stop()
                stopped.append(POSTGRES)
        return stopped

    def status(self) -> list[ServiceStatus]:
        state = self.load_state()
        cluster_running = (self.directory / "postgres" / "data").is_dir() and self.postgres().running()
        found = []
        for service in SERVICES:
            port = state.ports.get(service)
            record = state.processes.get(service)
            if service == POSTGRES:
                running, url = cluster_running, f"{processes.HOST}:{port}" if port else ""
            else:
                running = processes.is_running(record)
                url = self.server_spec(service, state, self.postgres()).url if port and POSTGRES in state.ports else ""
            found.append(
                ServiceStatus(
                    name=service,
                    running=running,
                    port=port,
                    pid=record.pid if record and running else None,
                    url=url,
                    purpose=PURPOSE[service],
                )
            )
        return found

    def exports(self) -> dict[str, str]:
        """The environment that points fpgaflow (and the ``prefect`` command) at this stack."""
        state = self.load_state()
        if not all(service in state.ports for service in SERVICES):
            raise StackError(f"the stack in {self.directory} was never started: fpgaflow team-stack up --dir {self.directory}")
        cluster = self.postgres()
        return {key: value for service in SERVERS for key, value in self.server_spec(service, state, cluster).export.items()}

    def _wait_until_ready(self, spec: ServerSpec, record: ProcessRecord) -> None:
        processes.wait_until(
            lambda: processes.answers(spec.health_url),
            lambda: processes.is_running(record),
            SERVER_START_TIMEOUT_SECONDS,
            f"the {spec.name} server",
            self.log_path(spec.name),
        )

    def _port(self, state: StackState, service: str) -> int:
        previous = state.ports.get(service)
        return previous if previous and processes.port_is_free(previous) else processes.free_port()
