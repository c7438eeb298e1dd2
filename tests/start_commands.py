"""Start commands for real servers, as a netra-rm configuration holds them.

PostgreSQL: ``initdb`` once into a temp dir (reusing :class:`servers.PostgresServer`'s
cluster set-up), then ``pg_ctl start``/``stop`` as the start and stop commands; as root
they run through ``runuser -u postgres --``, since PostgreSQL refuses to run as root.
Redis: ``redis-server`` in the foreground (no stop command: ``down`` signals it) or
daemonized (``--daemonize yes``, stopped with ``redis-cli shutdown``). ``app``: a small
TCP server that refuses to start unless PostgreSQL and Redis already answer, so a
successful start proves the dependency order.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from servers import (
    HOST,
    PG_PASSWORD,
    PG_USER,
    REDIS_PASSWORD,
    PostgresServer,
    ServerUnavailable,
    _unavailable,
    find_binary,
    free_port,
    port_accepts,
)

#: The app refuses to start (exit 3) unless both dependency ports accept connections.
APP_SCRIPT = """
import socket, sys
pg, redis, port = (int(a) for a in sys.argv[1:4])
for name, p in (("postgresql", pg), ("redis", redis)):
    try:
        socket.create_connection(("127.0.0.1", p), timeout=1).close()
    except OSError as exc:
        print(f"app: {name} on port {p} is not up: {exc}", flush=True)
        sys.exit(3)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(16)
print(f"app: listening on {port}", flush=True)
while True:
    conn, _ = server.accept()
    conn.close()
"""


class PgCluster:
    """A PostgreSQL cluster on a free port that nothing runs yet: netra-rm starts it."""

    def __init__(self) -> None:
        self.server = PostgresServer()
        if not self.server._initdb or not self.server._pg_ctl:
            raise ServerUnavailable("PostgreSQL: initdb/pg_ctl not found")
        self.server._init_cluster()  # initdb as the postgres user when root
        self.prefix: list[str] = []
        if self.server._run_as:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerUnavailable("PostgreSQL as root needs `runuser` to drop to the postgres user")
            self.prefix = [runuser, "-u", self.server._run_as, "--"]

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def root(self) -> Path:
        assert self.server.root is not None
        return self.server.root

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{self.port}/postgres"

    def start_command(self) -> list[str]:
        return [*self.prefix, str(self.server._pg_ctl), "-D", str(self.server.data), "-w", "-t", "60", "start"]

    def stop_command(self) -> list[str]:
        return [*self.prefix, str(self.server._pg_ctl), "-D", str(self.server.data), "-m", "fast", "-w", "-t",
                "60", "stop"]

    def service(self) -> dict[str, Any]:
        """The ``services.postgresql`` entry: start and stop commands, run in the cluster's dir."""
        return {"kind": "postgresql", "url": self.url, "start": self.start_command(), "stop": self.stop_command(),
                "workdir": str(self.root), "timeout": 5}

    def running(self) -> bool:
        return port_accepts(self.port)

    def stop_quietly(self) -> None:
        """Whatever a failed test left running: stop it (immediate mode)."""
        if (self.server.data / "postmaster.pid").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([*self.prefix, str(self.server._pg_ctl), "-D", str(self.server.data), "-m",
                                "immediate", "-w", "stop"], capture_output=True, timeout=60, cwd=self.root, check=False)

    def close(self) -> None:
        self.stop_quietly()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisCommands:
    """A Redis on a free port with a password, started by netra-rm's start command."""

    def __init__(self, *, password: str = REDIS_PASSWORD) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            raise ServerUnavailable("Redis: redis-server not found on PATH")
        self.binary = binary
        self.cli = find_binary("redis-cli")
        self.password = password
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="netra-rm-up-redis-"))

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{HOST}:{self.port}/0"

    def _args(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", HOST, "--requirepass", self.password,
                "--save", "", "--appendonly", "no", "--dir", str(self.root)]

    def foreground(self) -> dict[str, Any]:
        """The ``services.redis`` entry for a server that stays in the foreground, no stop command."""
        return {"kind": "redis", "url": self.url, "start": self._args(), "timeout": 3}

    def daemonized(self) -> dict[str, Any]:
        """The entry for ``--daemonize yes`` with ``redis-cli shutdown`` as its stop command."""
        if self.cli is None:
            raise ServerUnavailable("Redis: redis-cli not found on PATH")
        return {"kind": "redis", "url": self.url, "timeout": 3,
                "start": [*self._args(), "--daemonize", "yes", "--pidfile", str(self.root / "redis.pid"),
                          "--logfile", str(self.root / "redis.log")],
                "stop": [self.cli, "-h", HOST, "-p", str(self.port), "-a", self.password, "--no-auth-warning",
                         "shutdown", "nosave"]}

    def running(self) -> bool:
        return port_accepts(self.port)

    def stop_quietly(self) -> None:
        if self.cli and self.running():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([self.cli, "-h", HOST, "-p", str(self.port), "-a", self.password,
                                "--no-auth-warning", "shutdown", "nosave"],
                               capture_output=True, timeout=20, check=False)

    def close(self) -> None:
        self.stop_quietly()
        shutil.rmtree(self.root, ignore_errors=True)


def app_service(pg_port: int, redis_port: int, port: int) -> dict[str, Any]:
    """``app``: depends on postgresql and redis, and exits 3 if started before them."""
    return {"kind": "tcp", "url": f"tcp://{HOST}:{port}", "depends_on": ["postgresql", "redis"],
            "start": [sys.executable, "-c", APP_SCRIPT, str(pg_port), str(redis_port), str(port)], "timeout": 2}


def config_text(services: dict[str, Any], layers: dict[str, Any] | None = None, **sections: Any) -> str:
    """A configuration file's text: these services (replacing the defaults of the same name)."""
    data: dict[str, Any] = {"services": services, **sections}
    if layers:
        data["layers"] = layers
    return yaml.safe_dump(data, sort_keys=False)


# -- fixtures (registered through conftest.py) ------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    """An initialised PostgreSQL cluster, not running: `up` starts it."""
    try:
        cluster = PgCluster()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The cluster, down at the start of the test and stopped again after it."""
    pg_cluster.stop_quietly()
    assert not pg_cluster.running()
    yield pg_cluster
    pg_cluster.stop_quietly()


@pytest.fixture
def redis() -> Iterator[RedisCommands]:
    """Redis start and stop commands on a free port (not running until a test starts it)."""
    try:
        commands = RedisCommands()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    yield commands
    commands.close()
