"""Human output at 80, 120 and 200 columns without a terminal: what a user must read or
copy (an allocation id, a service's host and port, a path) is there whole; a column left
out to fit is named in one line.

The renderers are called in-process on real data (a ledger written by the engine);
a few real runs check that without a terminal and without COLUMNS the width is 80."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from netra_rm.core.engine import Engine
from netra_rm.core.verify import ledger_history, verify_ledger
from netra_rm.render.human import address, render_layer, render_status
from netra_rm.render.journal import render_history, render_verify
from netra_rm.render.startup import render_up

WIDTHS = [80, 120, 200]
SECRET = "pw-Wide-4"


def console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, no_color=True, highlight=False, soft_wrap=False,
                   force_terminal=False), buffer


def lines_fit(text: str, width: int) -> None:
    """No line is wider than the console, except the one-line notes printed unwrapped."""
    for line in text.splitlines():
        assert len(line) <= width or line.startswith(("(not shown", "ledger:", "journal:", "hint:")), line


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    ledger = tmp_path_factory.mktemp("wide") / "ledger.json"
    engine = Engine.from_options(ledger=str(ledger))
    for layer, category in [("service_integration", "api_contract_tests_with_a_long_name"),
                            ("core_integration", "db"), ("e2e_background", "browser")]:
        engine.allocate(engine.resolve_request(layer, category), engine.owner(None))
    return engine


SERVICES = {
    "postgresql": {"status": "unhealthy", "url": "postgresql://app:***@db.internal.example:6543/app",
                   "latency_ms": 2.0, "error": "postgresql at db.internal.example:6543: connection refused",
                   "blocked_by": []},
    "redis": {"status": "healthy", "url": "redis://127.0.0.1:6390/0", "latency_ms": 0.4, "version": "7.2.4"},
    "backend": {"status": "blocked", "url": "http://localhost:8000/health", "latency_ms": None,
                "blocked_by": ["postgresql"]},
}


@pytest.mark.parametrize("width", WIDTHS)
def test_status_shows_whole_ids_and_host_port(engine: Engine, width: int) -> None:
    resources = engine.resource_status(system_metrics={})
    services = {"services": SERVICES, "healthy_services": 1, "total_services": 3}
    out, buffer = console(width)
    render_status(out, resources, services, [], 0.0)
    text = buffer.getvalue()
    lines_fit(text, width)
    for allocation in resources["active_allocations"]:
        assert re.search(rf"\b{allocation['id']}\b", text), f"id {allocation['id']} cut at {width} columns"
    assert "db.internal.example:6543" in text and "127.0.0.1:6390" in text
    assert "service_integration" in text  # a layer name is not broken either
    if width >= 120:
        assert "postgresql://app:***@db.internal.example:6543/app" in text
    if width == 80:
        assert re.search(r"^\(not shown at 80 columns: .+\)$", text, re.M)
    if width == 200:
        assert "not shown" not in text


@pytest.mark.parametrize("width", WIDTHS)
def test_layer_shows_the_verdict_and_where_each_service_is(width: int) -> None:
    verdict = {"layer": "service_integration", "ready": False, "services": SERVICES, "conflicts": [],
               "pool": {"max_memory_mb": 2048, "allocated_memory_mb": 0, "max_cpu_percent": 80,
                        "allocated_cpu_percent": 0, "max_parallel_instances": 4, "active_instances": 0,
                        "reasons": []}}
    out, buffer = console(width)
    render_layer(out, verdict)
    text = buffer.getvalue()
    lines_fit(text, width)
    assert text.splitlines()[0] == "NOT READY  layer service_integration: missing postgresql, backend"
    assert "db.internal.example:6543" in text and "connection refused" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_history_shows_whole_ids_and_names_what_it_left_out(engine: Engine, width: int) -> None:
    events = ledger_history(engine)
    out, buffer = console(width)
    render_history(out, events)
    text = buffer.getvalue()
    lines_fit(text, width)
    for event in events:
        assert re.search(rf"\b{event['id']}\b", text)
    header = next(line for line in text.splitlines() if "event" in line)
    shown = set(header.split())
    left_out = {"slot", "amounts", "token", "pid"} - shown
    if left_out:
        note = next(line for line in text.splitlines() if line.startswith("(not shown"))
        assert all(name in note for name in left_out), note
    if width == 200:
        assert {"token", "pid", "slot"} <= shown


@pytest.mark.parametrize("width", WIDTHS)
def test_verify_never_breaks_a_path(engine: Engine, width: int) -> None:
    report = verify_ledger(engine).to_dict()
    out, buffer = console(width)
    render_verify(out, report)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("CLEAN  3 event(s) checked")
    assert f"ledger: {report['ledger']}" in lines
    assert f"journal: {report['journal_files'][0]}" in lines


@pytest.mark.parametrize("width", WIDTHS)
def test_up_dry_run_shows_each_service_and_its_command(width: int) -> None:
    data = {"targets": ["core_integration"], "dry_run": True, "services": [
        {"name": "postgresql", "level": 0, "action": "would_start", "status": "unhealthy", "seconds": None,
         "command": "pg_ctl -D /var/lib/postgresql/data -l /var/log/postgresql/pg.log -w start"},
        {"name": "redis", "level": 0, "action": "left_alone", "status": "healthy", "seconds": 0.01,
         "url": "redis://127.0.0.1:6390/0"}]}
    out, buffer = console(width)
    render_up(out, data)
    text = buffer.getvalue()
    lines_fit(text, width)
    assert "would start" in text and "left alone" in text
    joined = re.sub(r"[│ ]*\n[│ ]*", "", text)  # a folded command reads whole once the cells are joined
    assert "/var/lib/postgresql/data" in joined


def test_address_is_host_and_port_without_credentials() -> None:
    assert address(f"postgresql://app:{SECRET}@db:6543/x") == "db:6543"
    assert address("postgresql://app@db/x") == "db:5432"
    assert address("redis://:p@[::1]:6390/0") == "[::1]:6390"
    assert address("unix:///var/run/redis.sock?db=0") == "/var/run/redis.sock"
    assert address("postgresql://ci@/ci?host=/var/run/postgresql&port=5433") == "/var/run/postgresql:5433"
    assert address("https://api.example/health") == "api.example:443"


# -- the real command, with no terminal --------------------------------------------------

@pytest.fixture
def no_columns(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


def test_without_a_terminal_or_columns_status_is_80_wide_and_ids_are_whole(cli, no_columns: None) -> None:
    ids = [cli("allocate", "--layer", "service_integration", "--category", "contract_tests_for_the_api").stdout.strip()
           for _ in range(2)]
    result = cli("status", input="", env={"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:9/db"})
    assert result.code == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith(("(", "ledger", "hint"))) == 80
    for ident in ids:
        assert ident in result.stdout
    assert "127.0.0.1:9" in result.stdout and SECRET not in result.stdout
    assert "(not shown at 80 columns:" in result.stdout


def test_columns_widens_history(cli, no_columns: None) -> None:
    cli("allocate", "--layer", "core_integration", "--category", "db")
    narrow = cli("history", input="")
    wide = cli("history", input="", env={"COLUMNS": "200"})
    assert "not shown at 80 columns" in narrow.stdout
    assert "token" in wide.stdout and "pid" in wide.stdout and "not shown" not in wide.stdout
