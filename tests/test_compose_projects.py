"""Discovery agrees with Compose: for each project in tests/compose_projects, the address
netra-rm finds with the real Compose v2 CLI, and the one its own reader finds where it
claims support, equal the port Compose itself publishes (`docker compose config`).

The projects cover profiles (and COMPOSE_PROFILES), .env interpolation with nested
variables and comments, both override spellings, COMPOSE_FILE with two files, extends
(local and from another file), include, the long port syntax, port ranges, IPv6 and
sidecar images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from netra_rm.config.service import ServiceSpec
from netra_rm.services.compose import ComposeSettings, Discovery, discover

from compose_cli import NO_COMPOSE, base_env, compose_config, require_compose, standalone_env

PROJECTS = Path(__file__).resolve().parent / "compose_projects"

SPECS = {
    "postgresql": ServiceSpec("postgresql", "postgresql", "postgresql://app:pw-compose@localhost:5432/app"),
    "redis": ServiceSpec("redis", "redis", "redis://localhost:6379/0"),
    "clickhouse": ServiceSpec("clickhouse", "clickhouse", "http://default@localhost:8123/default"),
    "backend": ServiceSpec("backend", "http", "http://localhost:8000"),
}
TARGETS = {"postgresql": 5432, "redis": 6379, "clickhouse": 8123}


@dataclass(frozen=True)
class Case:
    """A project, how it is run, and which compose service serves each netra-rm service
    (None: none should be matched). ``ambiguous``: a warning must name the candidates.
    ``unresolved``: what the reader must say it could not follow (and then not guess)."""

    project: str
    expect: dict[str, str | None]
    env: dict[str, str] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unresolved: tuple[str, ...] = ()


CASES = [
    Case("profiles", {"postgresql": "dev-postgres", "redis": "dev-redis", "clickhouse": "dev-clickhouse"}),
    Case("profiles", {"postgresql": "test-postgres", "redis": None, "clickhouse": None},
         env={"COMPOSE_PROFILES": "test"}, pins={"postgresql": "test-postgres"},
         ambiguous={"redis": ("dev-redis", "test-redis"), "clickhouse": ("dev-clickhouse", "test-clickhouse")}),
    Case("dotenv", {"postgresql": "db", "redis": "cache", "clickhouse": "olap"}),
    Case("dotenv", {"postgresql": "db", "redis": "cache", "clickhouse": "olap"},
         env={"BASE": "44", "CH_PORT": "48123"}),  # the environment wins over .env, nested values follow it
    Case("override_yml", {"postgresql": "postgres", "redis": None}),
    Case("override_yaml", {"postgresql": "db", "redis": "cache"}),
    Case("compose_file", {"postgresql": "db", "redis": "cache"}, env={"COMPOSE_FILE": "base.yaml:ports.yaml"}),
    Case("extends_local", {"postgresql": "app-db", "redis": None}, ambiguous={"redis": ("cache-base", "cache")}),
    Case("extends_local", {"postgresql": "app-db", "redis": "cache"}, pins={"redis": "cache"}),
    Case("extends_file", {"postgresql": "db", "redis": "cache"}, unresolved=("extends of db from common.yaml",)),
    Case("include", {"postgresql": "db", "redis": "cache"}, unresolved=("include (databases.yaml)",)),
    Case("ports", {"postgresql": "db", "redis": "cache", "clickhouse": "olap"}),
    Case("sidecars", {"postgresql": "store", "redis": "cache", "clickhouse": None}),
]


def case_id(case: Case) -> str:
    return case.project + "".join(f"-{k}={v}" for k, v in case.env.items())


def compose_answer(config: dict[str, Any], compose_service: str | None, target: int) -> tuple[str, int] | None:
    """Compose's answer for a netra-rm service: where its container port is published
    (host, port), from `docker compose config` output; None when it is not."""
    if compose_service is None:
        return None
    for port in config["services"][compose_service].get("ports") or []:
        published = str(port.get("published") or "")
        if port["target"] == target and published.isdigit():
            return port.get("host_ip") or "localhost", int(published)
    return None


def netra_answer(found: Discovery, name: str) -> tuple[str, int] | None:
    url = found.urls.get(name)
    if url is None:
        return None
    parts = urlsplit(url)
    assert parts.port is not None
    return parts.hostname or "", parts.port


def run_discovery(case: Case, env: dict[str, str]) -> Discovery:
    specs = {name: SPECS[name] for name in case.expect}
    return discover(specs, ComposeSettings(services=case.pins), env={**env, **case.env},
                    cwd=PROJECTS / case.project, engine=False)


def check(case: Case, found: Discovery, config: dict[str, Any], *, reader: bool) -> None:
    skipped = set()
    if reader and case.unresolved:
        (warning,) = [w for w in found.warnings if "could not resolve" in w]
        for what in case.unresolved:
            assert what in warning
        skipped = {name for name, svc in case.expect.items() if svc is not None and svc not in found.compose_services
                   .values()}
        assert skipped, "the reader claims what it said it could not resolve"
    for name, compose_service in case.expect.items():
        if name in skipped:
            assert name not in found.urls  # not guessed
            continue
        expected = compose_answer(config, compose_service, TARGETS[name])
        assert netra_answer(found, name) == expected, (name, found)
        if expected is not None:
            assert found.compose_services[name] == compose_service
            configured = urlsplit(SPECS[name].url)
            assert urlsplit(found.urls[name])[::2] == configured[::2]  # scheme and path kept
            assert found.urls[name].startswith(SPECS[name].url.partition("@")[0] + "@") or "@" not in \
                SPECS[name].url  # credentials kept
    for name, candidates in case.ambiguous.items():
        (warning,) = [w for w in found.warnings if w.startswith(f"{name}: the compose services")]
        assert all(c in warning for c in candidates)
        assert f"discovery.compose.services.{name}" in warning


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_with_the_compose_cli_netra_rm_agrees_with_compose(case: Case) -> None:
    binary = require_compose()
    config = compose_config(binary, PROJECTS / case.project, base_env(**case.env))
    found = run_discovery(case, standalone_env(binary))
    assert found.source == "compose" and found.command == "docker-compose"
    check(case, found, config, reader=False)
    assert not [w for w in found.warnings if "could not resolve" in w]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_without_a_cli_the_reader_agrees_with_compose_where_it_claims_to(case: Case) -> None:
    binary = require_compose()
    config = compose_config(binary, PROJECTS / case.project, base_env(**case.env))
    found = run_discovery(case, base_env(**NO_COMPOSE))
    assert found.source == "file" and found.command == "docker compose"
    assert any("no Docker Compose v2 CLI" in note for note in found.notes)
    check(case, found, config, reader=True)
