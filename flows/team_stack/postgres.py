"""The stack's PostgreSQL: one database cluster under the stack folder, on a loopback port and a socket beside it.

PostgreSQL refuses to run as root, so when this process is root its programs run as the unprivileged
``postgres_user`` (the ``postgres`` account Debian's package makes), which owns the cluster's folder.
Connections need the password kept, readable by its owner only, in the stack folder.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fpgaflow.flows.team_stack.processes import HOST, ProcessRecord, StackError
from fpgaflow.tasks.settings import PipelineSettings

SUPERUSER = "fpgaflow"
DEBIAN_BIN_DIRS = Path("/usr/lib/postgresql")
UNIX_SOCKET_PATH_LIMIT = 107  # bytes of sun_path, less its final NUL
START_TIMEOUT_SECONDS = 120


def find_bin_dir(configured: Path | None) -> Path:
    """The folder of ``initdb``/``pg_ctl``: the setting, else Debian's newest version, else the one on PATH."""
    candidates = [configured] if configured else []
    if not configured:
        versions = DEBIAN_BIN_DIRS.glob("*/bin") if DEBIAN_BIN_DIRS.is_dir() else []
        candidates += sorted(versions, key=lambda path: int(re.sub(r"\D", "", path.parent.name) or 0), reverse=True)
        on_path = shutil.which("pg_ctl")
        candidates += [Path(on_path).resolve().parent] if on_path else []
    for folder in candidates:
        if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file():
            return folder
    where = f"FPGAFLOW_POSTGRES_BIN_DIR={configured} has no initdb and pg_ctl" if configured else "no initdb and pg_ctl found"
    raise StackError(
        f"PostgreSQL is not installed ({where}): scripts/setup installs Debian's postgresql package, "
        "or set FPGAFLOW_POSTGRES_BIN_DIR to the folder of its programs"
    )


def unprivileged_user(settings: PipelineSettings) -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when this process is root (None: run as this process's user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(settings.postgres_user)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root and there is no user {settings.postgres_user!r} to run it as: "
            "install Debian's postgresql package (it makes one) or set FPGAFLOW_POSTGRES_USER to an unprivileged user"
        ) from None


def read_or_make_password(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    return password


@dataclass(frozen=True)
class PostgresCluster:
    root: Path
    password: str
    bin_dir: Path
    user: pwd.struct_passwd | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def version(self) -> str:
        return self._run("postgres", "--version").stdout.strip()

    def uri(self, port: int, database: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{SUPERUSER}:{self.password}@{HOST}:{port}/{database}"

    def _owned_folder(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _run(self, program: str, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        user = self.user
        done = subprocess.run(
            [str(self.bin_dir / program), *arguments],
            capture_output=True,
            text=True,
            cwd=self.root if self.root.is_dir() else None,
            env={**os.environ, "LC_ALL": "C"},
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        if check and done.returncode != 0:
            who = f" as user {self.user.pw_name}" if self.user else ""
            raise StackError(f"{program} {' '.join(arguments)} failed{who}: {(done.stderr or done.stdout).strip()}")
        return done

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def initialise(self) -> None:
        """A new database cluster whose superuser logs in with the password (scram-sha-256)."""
        self._owned_folder(self.root)
        password_file = self.root / "initdb.password"  # read by initdb as its user, removed right after
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.password + "\n")
        if self.user is not None:
            os.chown(password_file, self.user.pw_uid, self.user.pw_gid)
        try:
            self._run(
                "initdb", "--pgdata", str(self.data_dir), "--username", SUPERUSER, f"--pwfile={password_file}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
            )  # fmt: skip
        finally:
            password_file.unlink()

    def running(self) -> bool:
        return self.initialised() and self._run("pg_ctl", "status", "--pgdata", str(self.data_dir), check=False).returncode == 0

    def start(self, port: int) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{port}"
        if len(str(socket_path).encode()) > UNIX_SOCKET_PATH_LIMIT:
            raise StackError(
                f"the socket path {socket_path} is longer than {UNIX_SOCKET_PATH_LIMIT} bytes: choose a shorter --dir"
            )
        self._owned_folder(self.socket_dir)
        options = f"-p {port} -h {HOST} -k {self.socket_dir}"
        self._run(
            "pg_ctl", "start", "--pgdata", str(self.data_dir), "--log", str(self.log_path), "--wait",
            f"--timeout={START_TIMEOUT_SECONDS}", "-o", options,
        )  # fmt: skip

    def record(self) -> tuple[ProcessRecord, int]:
        """The running postmaster and its port, from its ``postmaster.pid`` (pid first, port fourth)."""
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        return ProcessRecord(pid=pid, command=command), int(lines[3])

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "--pgdata", str(self.data_dir), "--mode=fast", "--wait")

    def ensure_databases(self, port: int, names: tuple[str, ...]) -> None:
        try:
            import psycopg2
        except ImportError:
            raise StackError("the PostgreSQL driver is missing: pip install 'fpgaflow[team]'") from None
        connection = psycopg2.connect(host=HOST, port=port, user=SUPERUSER, password=self.password, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                for name in names:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
