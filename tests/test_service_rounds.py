"""Checks repeated round after round (the monitor): a closed port is knocked on, not
connected to with a driver, until it opens again. Against real servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from netra_rm.services import ServiceSpec
from netra_rm.services import rounds as rounds_module
from netra_rm.services.rounds import ServiceRounds, knock

from servers import Server, closed_port

pytestmark = pytest.mark.services


@pytest.fixture()
def driver_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the services whose checker (driver) ran, in each round."""
    calls: list[str] = []
    lock = threading.Lock()
    real = rounds_module.check_one

    def counting(spec: ServiceSpec) -> object:
        with lock:
            calls.append(spec.name)
        return real(spec)

    monkeypatch.setattr(rounds_module, "check_one", counting)
    yield calls


def spec_for(server: Server, name: str, kind: str, **fields: object) -> ServiceSpec:
    return ServiceSpec(name=name, kind=kind, url=server.url, connect_timeout=1.0, timeout=2.0,
                       **fields)  # type: ignore[arg-type]


def test_a_stopped_service_is_knocked_on_until_it_answers_again(redis_server: Server,
                                                                 driver_calls: list[str]) -> None:
    specs = {"redis": spec_for(redis_server, "redis", "redis")}
    rounds = ServiceRounds(deadline=5.0)
    assert rounds.check(specs)["redis"].status == "healthy"
    with redis_server.stopped():
        first = rounds.check(specs)["redis"]
        assert (first.status, first.reason) == ("unhealthy", "refused")
        driver_calls.clear()
        again = rounds.check(specs)["redis"]
        assert driver_calls == []  # a knock, not a Redis connection
        assert (again.status, again.reason, again.error) == ("unhealthy", "refused", first.error)
        assert again.latency_ms is not None and again.latency_ms < 1000
        assert again.remediation == first.remediation
    back = rounds.check(specs)["redis"]
    assert back.status == "healthy"
    assert driver_calls == ["redis"]


def test_blocked_dependents_are_knocked_too_and_judged_as_before(backend_server: Server,
                                                                 driver_calls: list[str]) -> None:
    port = closed_port()
    specs = {
        "db": ServiceSpec(name="db", kind="tcp", url=f"tcp://127.0.0.1:{port}", connect_timeout=1.0),
        "api": ServiceSpec(name="api", kind="http", url=f"http://localhost:{closed_port()}",
                           health_path="/health", depends_on=("db",), connect_timeout=1.0),
        "web": spec_for(backend_server, "web", "http", health_path="/health"),
    }
    rounds = ServiceRounds(deadline=5.0)
    first = rounds.check(specs)
    driver_calls.clear()
    second = rounds.check(specs)
    assert driver_calls == ["web"]  # the healthy one is checked for real every round
    assert list(second) == list(first)
    for name in specs:
        assert (second[name].status, second[name].reason, second[name].error) == (
            first[name].status, first[name].reason, first[name].error)
    assert second["api"].status == "blocked" and second["api"].blocked_by == ("db",)


def test_a_moved_service_is_checked_properly(driver_calls: list[str]) -> None:
    spec = ServiceSpec(name="db", kind="tcp", url=f"tcp://127.0.0.1:{closed_port()}", connect_timeout=1.0)
    rounds = ServiceRounds(deadline=5.0)
    rounds.check({"db": spec})
    driver_calls.clear()
    moved = ServiceSpec(name="db", kind="tcp", url=f"tcp://127.0.0.1:{closed_port()}", connect_timeout=1.0)
    rounds.check({"db": moved})
    assert driver_calls == ["db"]


def test_a_remote_host_is_not_knocked(driver_calls: list[str]) -> None:
    """Only this machine's services are knocked (no DNS lookups in the round's thread)."""
    spec = ServiceSpec(name="db", kind="tcp", url="tcp://localhost.invalid:5432", connect_timeout=1.0)
    rounds = ServiceRounds(deadline=5.0)
    rounds.check({"db": spec})
    driver_calls.clear()
    rounds.check({"db": spec})
    assert driver_calls == ["db"]


def test_knock_tells_refused_from_listening_ports() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        targets = {"open": ("127.0.0.1", listener.getsockname()[1]),
                   "closed": ("127.0.0.1", closed_port()),
                   "closed-by-name": ("localhost", closed_port()),
                   "bad-address": ("not-an-ip", 1)}
        assert knock(targets, timeout=1.0) == {"closed", "closed-by-name"}
    finally:
        listener.close()


def test_a_service_on_a_unix_socket_is_checked_again_each_round(redis_server: Server,
                                                                driver_calls: list[str]) -> None:
    """A TCP knock cannot tell whether a server listens on a socket: the round after its
    socket comes back, the service is healthy again."""
    specs = {"cache": ServiceSpec(name="cache", kind="redis", url=redis_server.socket_url,  # type: ignore[attr-defined]
                                  connect_timeout=1.0, timeout=2.0)}
    rounds = ServiceRounds(deadline=5.0)
    with redis_server.stopped():
        first = rounds.check(specs)["cache"]
        assert (first.status, first.reason) == ("unhealthy", "refused")
        driver_calls.clear()
        rounds.check(specs)
        assert driver_calls == ["cache"]  # checked, not knocked on
    assert rounds.check(specs)["cache"].status == "healthy"
