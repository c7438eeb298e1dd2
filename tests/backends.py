"""The three ledger backends as test parameters: a file in tmp_path, or a fresh ledger on
the session's real Redis or PostgreSQL server (each test gets its own ``?ledger=NAME``,
so tests never see each other's allocations)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ("file", "redis", "postgresql")


@dataclass(frozen=True)
class Backend:
    """One ledger for one test: its kind, where it is, and the server behind it (if any)."""

    kind: str
    location: str
    server: object | None = None

    @property
    def shared(self) -> bool:
        return self.kind != "file"

    def open(self, state_dir: Path | None = None):  # type: ignore[no-untyped-def]
        from netra_rm.ledger import open_ledger

        env = {"XDG_STATE_HOME": str(state_dir)} if state_dir is not None else None
        return open_ledger(self.location, env=env)


def ledger_name() -> str:
    return "t" + os.urandom(6).hex()


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh ledger of ``kind``; the server fixture is started (or the test skipped) only
    when a test asks for that backend."""
    if kind == "file":
        return Backend("file", str(tmp_path / "ledger" / "ledger.json"))
    server = request.getfixturevalue("redis_server" if kind == "redis" else "pg_server")
    return Backend(kind, f"{server.url}?ledger={ledger_name()}", server)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test that takes it runs once per backend."""
    return make_backend(request.param, request, tmp_path)


@pytest.fixture(params=BACKENDS[1:])
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test that takes it runs on Redis and on PostgreSQL."""
    return make_backend(request.param, request, tmp_path)


def random_admission_config(rng: random.Random, *, most_in_a: int = 4, most_on_host: int = 6) -> str:
    """A configuration for the differential tests of the one-step grants: layer ``a``
    (host or global, up to ``most_in_a`` instances), global layer ``b``, a shared pool
    ``db`` with or without memory and CPU, and global caps up to ``most_on_host``
    instances; amounts drawn from ``rng``."""
    return f"""
layers:
  a:
    services: []
    pool: {{memory_mb: {rng.randint(200, 900)}, cpu_percent: {rng.randint(20, 90)},
            instances: {rng.randint(1, most_in_a)}, scope: {rng.choice(["host", "global"])}}}
  b:
    services: []
    pool: {{memory_mb: {rng.randint(200, 900)}, cpu_percent: {rng.randint(20, 90)}, instances: {rng.randint(1, 4)},
            scope: global}}
pools:
  db: {{instances: {rng.randint(1, 3)}, scope: {rng.choice(["host", "global"])},
        memory_mb: {rng.choice([None, 500])}, cpu_percent: {rng.choice([None, 40])}}}
limits: {{max_memory_mb: {rng.randint(500, 1500)}, max_cpu_percent: 100,
          max_parallel_instances: {rng.randint(2, most_on_host)}}}
machine: {{check_memory: false}}
""".replace("None", "null")


@dataclass
class Drawn:
    """A random request of the differential tests, its charges, a machine's free memory
    (None: not checked) and ``admit``'s verdict over the ledger as it is."""

    request: Any
    charges: list[Any]
    machine_free_mb: float | None
    expected: Any


def draw_request(engine: Any, rng: random.Random) -> Drawn | None:
    """A request for layer ``a``, ``b`` or none, maybe with pool ``db``, and what ``admit``
    says of it over every allocation the ledger holds; None: one that could never fit
    (refused before any ledger is asked)."""
    from netra_rm.core.accounting import charges as charges_of
    from netra_rm.core.admission import admit
    from netra_rm.errors import UsageError
    from netra_rm.ledger import EVERYTHING
    from netra_rm.records import Usage

    layer = rng.choice(["a", "b", None])
    pools = ("db",) if layer is None or rng.random() < 0.3 else ()
    try:
        request = engine.resolve_request(layer, "t", memory_mb=rng.choice([0, rng.randint(1, 400)]),
                                         cpu_percent=round(rng.uniform(0, 40), 3),
                                         dedicated=rng.random() < 0.15, pools=pools)
    except UsageError:
        return None
    found = charges_of(request, engine.config, engine.host_key)
    snapshot = engine.ledger.read(EVERYTHING)  # every instance taken, as held (not the index kept for them)
    capacity = {c.key: snapshot.pools[c.key].capacity if c.key in snapshot.pools else c.capacity for c in found}
    machine = None if request.memory_mb == 0 or rng.random() < 0.5 else float(rng.randint(0, 1200))
    # no caps charge: a pool-only request reserving nothing (then no machine check either)
    caps = next((c.key for c in found if c.kind == "caps"), "")
    expected = admit(request, found, capacity=capacity, usage=snapshot.usage, taken=snapshot.taken,
                     machine_free_mb=None if machine is None else machine - snapshot.usage.get(caps, Usage()).memory_mb)
    return Drawn(request, found, machine, expected)
