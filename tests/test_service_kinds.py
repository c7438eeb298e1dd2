"""A service kind is one module plus one row in the registry (netra_rm.config.kinds).

The proof: a toy kind, defined in this file and registered by a test, is accepted by the
configuration, checked, advised on and found in a compose project like the built-in
kinds, with no other file touched. And the layers: the configuration imports nothing
from the services, and naming a kind loads no driver.
"""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from netra_rm.config import kinds, load_config
from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ConfigError, ServiceCheckError
from netra_rm.services import check_services
from netra_rm.services.compose import ComposeService, PublishedPort, match_services, pick_port
from netra_rm.services.kind import ServiceKind, Where, find_kind
from netra_rm.services.probe import Probe, parse_address
from netra_rm.services.tcp import socket_errors

from servers import closed_port

ROOT = Path(__file__).resolve().parent.parent


# -- the toy kind: all of it ---------------------------------------------------------------------


class Toy(ServiceKind):
    """A line protocol: the server answers ``pong`` to ``ping``."""

    name = "toy"
    title = "Toy"
    schemes: ClassVar[Mapping[str, int | None]] = {"toy": 7007}
    container_port = 7007
    images = ("toyserver",)

    def probe(self, spec: ServiceSpec) -> Probe:
        address = parse_address(spec, self.schemes)
        with socket_errors(spec, address), \
                socket.create_connection((address.host, address.port), timeout=spec.connect_timeout) as sock:
            sock.settimeout(spec.timeout)
            sock.sendall(b"ping\n")
            answer = sock.recv(16)
        if answer != b"pong\n":
            raise ServiceCheckError(f"{spec.name} at {address.hostport} answered {answer!r}", reason="bad_reply")
        return Probe(version="1.0", method="toy")

    def start_step(self, spec: ServiceSpec, where: Where) -> str:
        return f"Start the toy server: `toyserver --port {where.port}`."


KIND = Toy()


@pytest.fixture()
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry row: kind ``toy`` is this module's ``KIND``."""
    monkeypatch.setitem(kinds.SERVICE_KINDS, "toy", __name__)


@pytest.fixture()
def toy_server() -> Iterator[int]:
    """A toy server on a free loopback port; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                if conn.recv(16) == b"ping\n":
                    conn.sendall(b"pong\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def toy_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(f"services:\n  pong: {{kind: toy, url: '{url}', connect_timeout: 2, timeout: 2}}\n"
                    "layers:\n  games:\n    services: [pong]\n"
                    "    pool: {memory_mb: 100, cpu_percent: 10, instances: 1}\n")
    return path


# -- a registered kind works everywhere a built-in one does -----------------------------------------


def test_the_configuration_accepts_a_kind_only_once_it_has_its_row(tmp_path: Path, toy_registered: None,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = toy_config(tmp_path, "toy://127.0.0.1:7007")
    assert load_config(path, env={}).services["pong"].kind == "toy"
    monkeypatch.delitem(kinds.SERVICE_KINDS, "toy")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "services.pong.kind: must be one of postgresql, redis, clickhouse, http, websocket, tcp, got 'toy'" \
        in str(caught.value)


def test_a_registered_kind_is_checked_with_its_own_probe(tmp_path: Path, toy_registered: None,
                                                         toy_server: int) -> None:
    config = load_config(toy_config(tmp_path, f"toy://127.0.0.1:{toy_server}"), env={})
    result = check_services(config.services)["pong"]
    assert (result.status, result.method, result.version, result.kind) == ("healthy", "toy", "1.0", "toy")


def test_a_registered_kind_is_advised_on_with_its_own_steps(tmp_path: Path, toy_registered: None) -> None:
    port = closed_port()
    path = toy_config(tmp_path, f"toy://127.0.0.1:{port}")
    result = check_services(load_config(path, env={}).services)["pong"]
    assert (result.status, result.reason) == ("unhealthy", "refused")
    assert result.remediation[0] == f"Start the toy server: `toyserver --port {port}`."
    assert f"Its address is services.pong.url in {path}" in result.remediation[1]

    broken = check_services({"pong": ServiceSpec(name="pong", kind="toy", url="toy://")})["pong"]
    assert broken.reason == "bad_url"
    assert broken.remediation[0] == "Fix the address of pong: expected toy://HOST:7007."

    unknown = check_services({"x": ServiceSpec(name="x", kind="mysql", url="mysql://h")})["x"]
    assert unknown.status == "unknown"
    assert unknown.remediation[0] == ("Set `kind` of service x to one of postgresql, redis, clickhouse, http, "
                                      "websocket, tcp, toy.")


def test_compose_discovery_finds_a_registered_kind_by_its_image_and_port(toy_registered: None) -> None:
    specs = {"pong": ServiceSpec(name="pong", kind="toy", url="toy://localhost:7007")}
    compose = {
        "games": ComposeService("games", "acme/toyserver:2", (PublishedPort(7007, 49154), PublishedPort(9090, 49155))),
        "toy-ui": ComposeService("toy-ui", "acme/toyserver-admin:2", (PublishedPort(80, 8080),)),
        "db": ComposeService("db", "postgres:16", (PublishedPort(5432, 5432),)),
    }
    assert match_services(specs, compose, {}).services == {"pong": "games"}
    assert pick_port(specs["pong"], compose["games"]) == PublishedPort(7007, 49154)


class _NeedsADriver(Toy):
    drivers: ClassVar[Mapping[str, str]] = {"netra_rm_no_such_driver": "no-such-driver[fast]"}


def test_a_kind_whose_driver_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                             toy_registered: None) -> None:
    monkeypatch.setattr(sys.modules[__name__], "KIND", _NeedsADriver())
    result = check_services({"pong": ServiceSpec(name="pong", kind="toy", url="toy://127.0.0.1:1")})["pong"]
    assert (result.status, result.reason, result.terminal) == ("unhealthy", "driver_missing", True)
    assert result.error == "pong: cannot check a toy service: netra_rm_no_such_driver is not installed"
    assert "`pip install no-such-driver[fast]`" in result.remediation[0]


# -- the layers -------------------------------------------------------------------------------------


def test_every_row_of_the_registry_names_a_module_that_defines_that_kind() -> None:
    for name in kinds.kind_names():
        kind = find_kind(name)
        assert isinstance(kind, ServiceKind) and kind.name == name, name
        assert kind.schemes, name
    assert find_kind("mysql") is None


def test_the_configuration_imports_nothing_from_the_services() -> None:
    """``netra_rm.config`` is below ``netra_rm.services``: not one import, even inside a function."""
    found = []
    for path in sorted((ROOT / "netra_rm" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.startswith(("netra_rm.services", "..services"))]
    assert found == []


def test_naming_advising_on_and_matching_every_kind_loads_no_driver() -> None:
    script = (
        "import sys\n"
        "from netra_rm.config.kinds import kind_names\n"
        "from netra_rm.config.service import ServiceSpec\n"
        "from netra_rm.services.compose import match_services, ComposeService\n"
        "from netra_rm.services.remediation import remediation_for\n"
        "specs = {k: ServiceSpec(name=k, kind=k, url='x://127.0.0.1:1') for k in kind_names()}\n"
        "for spec in specs.values():\n"
        "    for reason in ('refused', 'auth', 'unknown_database', 'bad_url', 'bad_reply'):\n"
        "        assert remediation_for(spec, reason)\n"
        "match_services(specs, {'db': ComposeService('db', 'postgres:16')}, {})\n"
        "print(sorted(m for m in ('psycopg', 'redis', 'httpx', 'clickhouse_connect') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
