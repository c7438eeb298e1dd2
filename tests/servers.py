"""Real servers for the service tests and the bench, each on a free loopback port.

PostgreSQL (``initdb`` + ``pg_ctl``, scram-sha-256 passwords), Redis (``redis-server``
with ``requirepass``), ClickHouse (Debian's ``clickhouse-server``, a user with a
password) and small stub servers run in their own processes: HTTP health endpoints, a
WebSocket server doing a correct RFC 6455 handshake, a silent server that accepts TCP
and never answers, and a Redis impostor that answers every command with ``LOADING``.

Plain classes first (the bench uses them without pytest), pytest fixtures at the end:
``pg_server``, ``redis_server``, ``clickhouse_server``, ``backend_server``,
``auth_server``, ``frontend_server``, ``websocket_server``, ``silent_server``,
``live_servers``, ``service_specs`` and ``stop_server``. A missing server binary skips the tests that need
it, unless ``NETRA_RM_REQUIRE_SERVICES=1``, which makes it a failure.

Run this file as ``python servers.py stub KIND [--port N]`` to serve one stub (that is
how :class:`StubServer` starts them).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"
REQUIRE_ENV = "NETRA_RM_REQUIRE_SERVICES"

PG_USER = "netra"
PG_PASSWORD = "pg-S3cret-7f3a9"
PG_DATABASE = "netra_test"
REDIS_PASSWORD = "rd-S3cret-41c2e"
CLICKHOUSE_USER = "netra"
CLICKHOUSE_PASSWORD = "ch-S3cret-9b8d1"

#: Every password the servers use: tests assert none of them reaches any output.
PASSWORDS: tuple[str, ...] = (PG_PASSWORD, REDIS_PASSWORD, CLICKHOUSE_PASSWORD)

#: The default dependency graph of netra-rm (see netra_rm/defaults/netra-rm.yaml).
DEFAULT_DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "postgresql": (),
    "redis": (),
    "clickhouse": (),
    "auth": ("postgresql", "redis"),
    "backend": ("postgresql", "redis", "auth"),
    "frontend": ("backend", "auth"),
    "websocket": ("backend", "redis"),
}


class ServerUnavailable(RuntimeError):
    """A server could not be started here: its binary is missing or it would not come up."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str,
               process: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    """Poll ``condition`` until it holds; raise :class:`ServerUnavailable` at ``timeout``.

    Stops early when ``process`` exits, quoting the end of ``log``.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise ServerUnavailable(f"{what}: the process exited with {process.returncode}"
                                    f"{_tail(log)}")
        if time.monotonic() >= deadline:
            raise ServerUnavailable(f"{what}: not ready within {timeout:g} s{_tail(log)}")
        # back off from 5 ms to 100 ms: waiting on a condition, not sleeping a fixed time
        threading.Event().wait(pause)
        pause = min(pause * 2, 0.1)


def port_accepts(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return ("\n--- " + str(log) + " ---\n" + "\n".join(text)) if text else ""


def find_binary(name: str, *, pg: bool = False) -> str | None:
    """``name`` on PATH; for PostgreSQL programs also ``pg_config --bindir`` and Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest first), which are not on PATH there."""
    found = shutil.which(name)
    if found or not pg:
        return found
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                    check=True, timeout=10).stdout.strip()
            candidates.append(Path(bindir) / name)
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0, reverse=True)
    candidates.extend(debian)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return None


def _stop_process(process: subprocess.Popen[bytes] | None, *, sig: int = signal.SIGTERM,
                  grace: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


class Server:
    """A server the tests own: start, stop, restart, and its URL."""

    name = "server"
    port: int

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop for good and remove what the server wrote."""
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the ``with`` block and start it again afterwards."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def url(self) -> str:
        raise NotImplementedError


# --------------------------------------------------------------------------- PostgreSQL


class PostgresServer(Server):
    """PostgreSQL from the machine's binaries: ``initdb`` into a temp dir, ``pg_ctl`` start/stop.

    Password authentication is on for every connection (scram-sha-256); the superuser
    :data:`PG_USER` has :data:`PG_PASSWORD` and owns the database :data:`PG_DATABASE`.
    As root (PostgreSQL refuses to run as root) the programs run as the ``postgres`` user.
    """

    name = "postgresql"

    def __init__(self, *, user: str = PG_USER, password: str = PG_PASSWORD,
                 database: str = PG_DATABASE) -> None:
        self.user, self.password, self.database = user, password, database
        self.port = free_port()
        self.root: Path | None = None
        self.running = False
        self._initdb = find_binary("initdb", pg=True)
        self._pg_ctl = find_binary("pg_ctl", pg=True)
        self._run_as: str | None = None
        self._created = False

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def url_with(self, *, user: str | None = None, password: str | None = None,
                 database: str | None = None) -> str:
        """This server's URL with other credentials or another database."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        database = self.database if database is None else database
        return f"postgresql://{user}:{urllib.parse.quote(password, safe='')}@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_with()

    @property
    def socket_url(self) -> str:
        """This server through its Unix socket, in libpq's form (no host; the directory in
        the query)."""
        assert self.root is not None, "start the server first"
        return (f"postgresql://{self.user}:{urllib.parse.quote(self.password, safe='')}@/{self.database}"
                f"?host={self.root}&port={self.port}")

    def start(self) -> None:
        if self.running:
            return
        if not self._initdb or not self._pg_ctl:
            raise ServerUnavailable("PostgreSQL: initdb/pg_ctl not found (PATH, pg_config --bindir, "
                                    "/usr/lib/postgresql/*/bin)")
        if self.root is None:
            self._init_cluster()
        self._pg(self._pg_ctl, "-D", str(self.data), "-l", str(self.data.parent / "postgres.log"),
                 "-w", "-t", "60", "-s", "start", timeout=90)
        self.running = True
        if not self._created:
            self._create_database()
            self._created = True

    def stop(self) -> None:
        if not self.running or self.root is None:
            return
        self._pg(self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "-s",
                 "stop", timeout=90)
        self.running = False

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)

    def _init_cluster(self) -> None:
        if os.geteuid() == 0:
            for candidate in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(candidate)
                except KeyError:
                    continue
                self._run_as = candidate
                break
            else:
                raise ServerUnavailable("PostgreSQL: running as root and no 'postgres' user")
        # not under pytest's tmp dir: the postgres user must be able to reach it
        self.root = Path(tempfile.mkdtemp(prefix="netra-rm-pg-"))
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            for path in (self.root, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        atexit.register(self.close)
        self._pg(self._initdb, "-D", str(self.data), "-U", self.user, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync",
                 "--no-instructions", timeout=120)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\n# netra-rm tests\nlisten_addresses = '{HOST}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n"
                "max_connections = 40\n"
            )

    def _create_database(self) -> None:
        import psycopg  # a dependency of netra-rm itself

        with psycopg.connect(self.url_with(database="postgres"), autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def _pg(self, *argv: str | None, timeout: float) -> None:
        args = [str(a) for a in argv if a is not None]
        log = (self.root / "pg_ctl.log") if self.root else None
        try:
            done = subprocess.run(args, user=self._run_as, cwd=self.root, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except subprocess.TimeoutExpired as exc:
            raise ServerUnavailable(f"PostgreSQL: {' '.join(args[:1])} timed out") from exc
        if done.returncode != 0:
            server_log = self.root / "postgres.log" if self.root else None
            raise ServerUnavailable(f"PostgreSQL: {Path(args[0]).name} {args[-1]} failed "
                                    f"({done.returncode}): {done.stderr.strip()}"
                                    f"{_tail(server_log)}{_tail(log)}")


# --------------------------------------------------------------------------- Redis


class RedisServer(Server):
    """``redis-server`` on 127.0.0.1 with ``requirepass`` and no persistence."""

    name = "redis"

    def __init__(self, *, password: str = REDIS_PASSWORD) -> None:
        self.password = password
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="netra-rm-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._binary = find_binary("redis-server")
        atexit.register(self.close)

    def url_with(self, *, password: str | None = None) -> str:
        password = self.password if password is None else password
        cred = f":{urllib.parse.quote(password, safe='')}@" if password else ""
        return f"redis://{cred}{HOST}:{self.port}/0"

    @property
    def url(self) -> str:
        return self.url_with()

    @property
    def socket(self) -> Path:
        return self.root / "redis.sock"

    @property
    def socket_url(self) -> str:
        """This server through its Unix socket (redis-py's ``unix://`` form)."""
        return f"unix://:{urllib.parse.quote(self.password, safe='')}@{self.socket}?db=0"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if not self._binary:
            raise ServerUnavailable("Redis: redis-server not found on PATH")
        log = self.root / "redis.log"
        self.process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", HOST,
             "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--requirepass", self.password, "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--daemonize", "no", "--loglevel", "warning",
             "--logfile", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._pong, timeout=20, what="Redis", process=self.process, log=log)

    def stop(self) -> None:
        _stop_process(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(_resp("AUTH", self.password) + _resp("PING"))
                data = b""
                while data.count(b"\r\n") < 2:
                    chunk = sock.recv(1024)
                    if not chunk:
                        return False
                    data += chunk
                return data == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


# --------------------------------------------------------------------------- ClickHouse

_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{root}/clickhouse.log</log><errorlog>{root}/clickhouse.err.log</errorlog></logger>
    <listen_host>{host}</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
"""

_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <{user}>
            <password>{password}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </{user}>
    </users>
    <quotas><default></default></quotas>
</yandex>
"""


class ClickHouseServer(Server):
    """Debian's ``clickhouse-server`` (18.16 here) in the foreground, config in a temp dir.

    Only the user :data:`CLICKHOUSE_USER` exists, with :data:`CLICKHOUSE_PASSWORD`.
    """

    name = "clickhouse"

    def __init__(self, *, user: str = CLICKHOUSE_USER,
                 password: str = CLICKHOUSE_PASSWORD) -> None:
        self.user, self.password = user, password
        self.port = free_port()
        self.tcp_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="netra-rm-clickhouse-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._binary = find_binary("clickhouse-server")
        atexit.register(self.close)

    def url_with(self, *, user: str | None = None, password: str | None = None,
                 database: str = "default") -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        return f"http://{user}:{urllib.parse.quote(password, safe='')}@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_with()

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if not self._binary:
            raise ServerUnavailable("ClickHouse: clickhouse-server not found on PATH")
        config = self.root / "config.xml"
        config.write_text(_CLICKHOUSE_CONFIG.format(root=self.root, host=HOST,
                                                    http_port=self.port, tcp_port=self.tcp_port))
        (self.root / "users.xml").write_text(_CLICKHOUSE_USERS.format(user=self.user,
                                                                      password=self.password))
        out = self.root / "stdout.log"
        with open(out, "ab") as sink:
            self.process = subprocess.Popen([self._binary, f"--config-file={config}"],
                                            cwd=self.root, stdin=subprocess.DEVNULL,
                                            stdout=sink, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=60, what="ClickHouse", process=self.process,
                   log=self.root / "clickhouse.err.log")

    def stop(self) -> None:
        _stop_process(self.process, grace=20)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _answers(self) -> bool:
        query = urllib.parse.urlencode({"query": "SELECT 1"})
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}/?{query}",
            headers={"X-ClickHouse-User": self.user, "X-ClickHouse-Key": self.password})
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return response.read().strip() == b"1"
        except (OSError, urllib.error.URLError):
            return False


# --------------------------------------------------------------------------- stub servers

STUB_KINDS = ("http", "ws", "ws-bad-accept", "silent", "redis-loading")


class StubServer(Server):
    """One small real server in its own process (``python servers.py stub KIND``).

    ``http`` serves ``/health`` (200 JSON ``{"status": "ok", "version": "1.4.2", ...}``),
    ``/`` (200 HTML), ``/down`` (503 JSON), ``/degraded`` (200 JSON status degraded),
    ``/text`` (200 plain text) and ``/private`` (401); ``ws`` does an RFC 6455 handshake
    on any path; ``ws-bad-accept`` answers 101 with a wrong ``Sec-WebSocket-Accept``;
    ``silent`` accepts connections and never answers; ``redis-loading`` answers every
    command with ``-LOADING``.
    """

    def __init__(self, kind: str, *, name: str | None = None) -> None:
        if kind not in STUB_KINDS:
            raise ValueError(f"unknown stub kind {kind!r}")
        self.kind = kind
        self.name = name or kind
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        scheme = "ws" if self.kind.startswith("ws") else "http"
        if self.kind == "redis-loading":
            scheme = "redis"
        return f"{scheme}://{HOST}:{self.port}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "stub", self.kind,
             "--port", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        ready: list[bytes] = []
        reader = threading.Thread(target=lambda: ready.append(self.process.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(10)
        line = ready[0].decode().split() if ready else []
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise ServerUnavailable(f"stub {self.kind}: did not report its port")
        self.port = int(line[1])

    def stop(self) -> None:
        _stop_process(self.process, grace=5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


class TlsStub:
    """An ``http`` or ``ws`` stub over TLS, served from a thread of the test process with a
    certificate for localhost and 127.0.0.1 from a throwaway CA (``ca_file``).

    A client that refuses the certificate fails its handshake, which the stub ignores.
    Use as a context manager; ``url`` is ``https://localhost:PORT`` or ``wss://...``.
    """

    def __init__(self, kind: str, directory: Path) -> None:
        import ssl

        import trustme

        if kind not in ("http", "ws"):
            raise ValueError(f"TLS stubs serve http or ws, not {kind!r}")
        self.kind = kind
        ca = trustme.CA()
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "test-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self._context)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.kind == 'http' else 'wss'}://localhost:{self.port}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _serve(self) -> None:
        handler = _http_connection if self.kind == "http" else _ws_connection
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handshake_then, args=(raw, handler), daemon=True).start()

    def _handshake_then(self, raw: socket.socket, handler: Callable[[socket.socket], None]) -> None:
        import ssl

        try:
            conn = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client did not trust us
            return
        handler(conn)


def _serve_stub(kind: str, port: int) -> None:
    """Run one stub server in this process until it is terminated."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    handler = {"http": _http_connection, "ws": _ws_connection,
               "ws-bad-accept": lambda c: _ws_connection(c, bad_accept=True),
               "silent": _silent_connection, "redis-loading": _loading_connection}[kind]
    held: list[socket.socket] = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # the silent stub keeps every connection open and quiet
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def _read_head(conn: socket.socket) -> tuple[str, str, dict[str, str]] | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buf += chunk
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_line, *lines = head.split("\r\n")
    method, path, _ = (request_line.split(" ", 2) + ["", ""])[:3]
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return method, path, headers


_HTTP_ROUTES: dict[str, tuple[int, str, bytes]] = {
    "/health": (200, "application/json",
                json.dumps({"status": "ok", "version": "1.4.2",
                            "checks": {"database": "up", "replicas": [{"state": "up"}]}}).encode()),
    "/": (200, "text/html", b"<!doctype html><title>frontend</title><p>ok</p>"),
    "/down": (503, "application/json", b'{"status": "down"}'),
    "/degraded": (200, "application/json", b'{"status": "degraded"}'),
    "/text": (200, "text/plain", b"ok"),
    "/private": (401, "application/json", b'{"error": "unauthorized"}'),
}
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable",
            426: "Upgrade Required"}


def _http_connection(conn: socket.socket) -> None:
    with conn:
        while True:  # keep-alive: one request after another on this connection
            try:
                request = _read_head(conn)
            except OSError:
                return
            if request is None:
                return
            _, target, _ = request
            path = urllib.parse.urlsplit(target).path
            status, ctype, body = _HTTP_ROUTES.get(path, (404, "text/plain", b"not found"))
            conn.sendall(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nServer: netra-rm-test-stub\r\n\r\n".encode() + body)


def _ws_connection(conn: socket.socket, *, bad_accept: bool = False) -> None:
    with conn:
        try:
            request = _read_head(conn)
        except OSError:
            return
        if request is None:
            return
        method, _, headers = request
        key = headers.get("sec-websocket-key", "")
        if method != "GET" or headers.get("upgrade", "").lower() != "websocket" or not key:
            body = b"this is a websocket endpoint"
            conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
            return
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if bad_accept:
            accept = base64.b64encode(b"x" * 20).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\nServer: netra-rm-test-ws\r\n\r\n").encode())
        _ws_frames(conn)


def _ws_frames(conn: socket.socket) -> None:
    """Echo text frames and answer a close frame, until the client goes away."""
    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    try:
        while True:
            first, second = read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = int.from_bytes(read(2), "big")
            elif length == 127:
                length = int.from_bytes(read(8), "big")
            mask = read(4) if second & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read(length)))
            if opcode == 0x8:
                conn.sendall(bytes([0x88, len(payload[:2])]) + payload[:2])
                return
            if opcode == 0x1 and length < 126:
                conn.sendall(bytes([0x81, length]) + payload)
    except (ConnectionError, OSError):
        return


def _silent_connection(conn: socket.socket) -> None:
    """Accept and say nothing: the connection stays open until the client gives up."""
    threading.Event().wait()


def _loading_connection(conn: socket.socket) -> None:
    with conn:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            commands = sum(1 for line in data.split(b"\r\n") if line.startswith(b"*")) or 1
            conn.sendall(b"-LOADING Redis is loading the dataset in memory\r\n" * commands)


# --------------------------------------------------------------------------- a TCP proxy


class TcpProxy:
    """A TCP proxy on loopback in front of ``target_port``: it counts what passes each way,
    and lets a test cut a connection at a chosen moment.

    ``cut`` is called with each chunk a client sends and answers "pass" (forward it),
    "drop" (close the connection without forwarding it) or "after" (forward it, let the
    server answer in full, and close the client's connection without passing the answer
    on): a lost reply.

    ``round_trips`` counts the PostgreSQL protocol messages after which a client waits for
    the server (Sync, and simple Query).
    """

    def __init__(self, target_port: int, *, cut: Callable[[bytes], str] | None = None) -> None:
        self.target_port = target_port
        self.cut = cut
        self.sent = 0  # bytes from clients to the server
        self.received = 0  # bytes from the server to clients
        self.sends = 0  # chunks clients sent
        self.round_trips = 0
        self.cuts: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url_for(self, url: str) -> str:
        """``url`` (a server on ``target_port``) through this proxy."""
        return url.replace(f":{self.target_port}/", f":{self.port}/", 1)

    def reset_counts(self) -> None:
        with self._lock:
            self.sent = self.received = self.sends = self.round_trips = 0

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        import select

        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        stream = _PgStream()
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 1.0)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is upstream:
                        client.sendall(data)
                        with self._lock:
                            self.received += len(data)
                        continue
                    action = self.cut(data) if self.cut is not None else "pass"
                    if action == "drop":
                        self.cuts.append(action)
                        return
                    upstream.sendall(data)
                    with self._lock:
                        self.sent += len(data)
                        self.sends += 1
                        self.round_trips += stream.waits(data)
                    if action == "after":
                        self.cuts.append(action)
                        # the server finishes what it was sent (its ReadyForQuery: a COMMIT
                        # done); the client loses the reply
                        upstream.settimeout(5)
                        seen = b""
                        while _READY not in seen:
                            chunk = upstream.recv(1 << 16)
                            if not chunk:
                                break
                            seen = seen[-len(_READY):] + chunk
                        client.close()
                        return
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


#: PostgreSQL's ReadyForQuery message (its status byte follows): the server is done
_READY = b"Z\x00\x00\x00\x05"


class _PgStream:
    """The messages a PostgreSQL client sends, split as they pass (the first ones, before
    the startup message is done, carry no type byte)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False

    def waits(self, data: bytes) -> int:
        """How many of the messages completed by ``data`` make the client wait for the
        server (Sync, simple Query)."""
        self.buffer += data
        count = 0
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return count
                length = int.from_bytes(self.buffer[:4], "big")
                code = int.from_bytes(self.buffer[4:8], "big")
                if len(self.buffer) < length:
                    return count
                self.buffer = self.buffer[length:]
                self.started = code == 196608  # protocol 3.0: the startup message (not SSL/GSS requests)
                continue
            if len(self.buffer) < 5:
                return count
            length = int.from_bytes(self.buffer[1:5], "big")
            if len(self.buffer) < length + 1:
                return count
            count += self.buffer[:1] in (b"S", b"Q")
            self.buffer = self.buffer[length + 1:]


# --------------------------------------------------------------------------- the stack


def closed_port() -> int:
    """A loopback port with nothing listening: connections to it are refused."""
    return free_port()


def live_specs(servers: Mapping[str, Server], **overrides: Any) -> dict[str, Any]:
    """The seven default services as :class:`ServiceSpec` pointing at ``servers``.

    ``servers`` maps postgresql, redis, clickhouse, auth, backend, frontend and
    websocket to running servers; ``overrides`` are ServiceSpec fields for every spec
    (e.g. ``timeout=1.0``).
    """
    from netra_rm.services import ServiceSpec

    kinds = {"postgresql": "postgresql", "redis": "redis", "clickhouse": "clickhouse",
             "auth": "http", "backend": "http", "frontend": "http", "websocket": "websocket"}
    envs = {"postgresql": "DATABASE_URL", "redis": "REDIS_URL", "clickhouse": "CLICKHOUSE_URL",
            "auth": "AUTH_SERVICE_URL", "backend": "BACKEND_URL", "frontend": "FRONTEND_URL",
            "websocket": "WEBSOCKET_URL"}
    specs: dict[str, Any] = {}
    for name, kind in kinds.items():
        url = servers[name].url
        extra: dict[str, Any] = {}
        if name == "websocket":
            url += "/ws"
        if name == "frontend":
            extra["health_path"] = "/"
        elif kind == "http":
            extra["health_path"] = "/health"
        fields = {"connect_timeout": 1.0, "timeout": 2.0, **extra, **overrides}
        specs[name] = ServiceSpec(name=name, kind=kind, url=url, url_env=envs[name],
                                  depends_on=DEFAULT_DEPENDS_ON[name], **fields)
    return specs


class ServerStack:
    """All the servers the seven default services need, started together (bench and tests)."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {
            "postgresql": PostgresServer(),
            "redis": RedisServer(),
            "clickhouse": ClickHouseServer(),
            "auth": StubServer("http", name="auth"),
            "backend": StubServer("http", name="backend"),
            "frontend": StubServer("http", name="frontend"),
            "websocket": StubServer("ws", name="websocket"),
            "silent": StubServer("silent"),
        }

    def __enter__(self) -> Self:
        started: list[Server] = []
        errors: list[BaseException] = []

        def start(server: Server) -> None:
            try:
                server.start()
                started.append(server)
            except BaseException as exc:  # noqa: BLE001 - re-raised once all have started
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in self.servers.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.__exit__(None, None, None)
            raise errors[0]
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.close()

    def __getitem__(self, name: str) -> Server:
        return self.servers[name]


# --------------------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:  # the bench runs without pytest
    pytest = None  # type: ignore[assignment]


def _unavailable(reason: str) -> None:
    """Skip (or, with NETRA_RM_REQUIRE_SERVICES=1, fail) a test whose server cannot run."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def _serve(server: Server) -> Iterator[Server]:
    try:
        server.start()
    except ServerUnavailable as exc:
        server.close()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.close()


if pytest is not None:

    @pytest.fixture(scope="session")
    def pg_server() -> Iterator[Server]:
        """A running :class:`PostgresServer` (user netra, a password, database netra_test)."""
        yield from _serve(PostgresServer())

    @pytest.fixture(scope="session")
    def redis_server() -> Iterator[Server]:
        """A running :class:`RedisServer` with ``requirepass``."""
        yield from _serve(RedisServer())

    @pytest.fixture(scope="session")
    def clickhouse_server() -> Iterator[Server]:
        """A running :class:`ClickHouseServer` (user netra with a password)."""
        yield from _serve(ClickHouseServer())

    @pytest.fixture(scope="session")
    def backend_server() -> Iterator[Server]:
        """An HTTP stub standing in for the backend (``/health`` answers 200 JSON)."""
        yield from _serve(StubServer("http", name="backend"))

    @pytest.fixture(scope="session")
    def auth_server() -> Iterator[Server]:
        """An HTTP stub standing in for the auth service."""
        yield from _serve(StubServer("http", name="auth"))

    @pytest.fixture(scope="session")
    def frontend_server() -> Iterator[Server]:
        """An HTTP stub standing in for the frontend (``/`` answers 200 HTML)."""
        yield from _serve(StubServer("http", name="frontend"))

    @pytest.fixture(scope="session")
    def websocket_server() -> Iterator[Server]:
        """A WebSocket stub doing a correct RFC 6455 handshake on any path."""
        yield from _serve(StubServer("ws", name="websocket"))

    @pytest.fixture(scope="session")
    def silent_server() -> Iterator[Server]:
        """A server that accepts TCP connections and never answers."""
        yield from _serve(StubServer("silent"))

    @pytest.fixture(scope="session")
    def live_servers(pg_server: Server, redis_server: Server, clickhouse_server: Server,
                     backend_server: Server, auth_server: Server, frontend_server: Server,
                     websocket_server: Server) -> dict[str, Server]:
        """The seven running servers by service name."""
        return {"postgresql": pg_server, "redis": redis_server, "clickhouse": clickhouse_server,
                "backend": backend_server, "auth": auth_server, "frontend": frontend_server,
                "websocket": websocket_server}

    @pytest.fixture()
    def service_specs(live_servers: dict[str, Server]) -> dict[str, Any]:
        """The seven default services as ServiceSpecs pointing at the running servers."""
        return live_specs(live_servers)

    @pytest.fixture()
    def stop_server() -> Iterator[Callable[[Server], None]]:
        """A function that stops a server for this test; the server is restarted afterwards."""
        stopped: list[Server] = []

        def stop(server: Server) -> None:
            server.stop()
            stopped.append(server)

        yield stop
        for server in reversed(stopped):
            server.start()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "stub":
        port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
        _serve_stub(sys.argv[2], port)
    else:
        print(__doc__)
        sys.exit(2)
