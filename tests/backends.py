"""The three ledger backends as test parameters: a file in tmp_path, or a fresh ledger on
the session's real Redis or PostgreSQL server (each test gets its own ``?ledger=NAME``,
so tests never see each other's allocations)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
