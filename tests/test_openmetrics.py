"""``netra-rm status --format openmetrics`` (and ``--output FILE``), read back with
prometheus-client's parsers: the OpenMetrics one, and the classic text-format one that
stands in for node_exporter's textfile collector.

Services are real: an HTTP stub that answers, and a Redis URL on a closed loopback port.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text_format

from ci_stack import SECRET

MIB = 1024 * 1024


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name, labels), parsed as OpenMetrics."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse_openmetrics(text) for s in family.samples}


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


def test_output_parses_as_openmetrics_and_as_the_text_format(cli, stack: Path) -> None:
    result = cli("--config", str(stack), "status", "--format", "openmetrics")

    assert result.code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("\n# EOF\n")
    openmetrics = {f.name: f for f in parse_openmetrics(result.stdout)}
    text_format = {f.name: f for f in parse_text_format(result.stdout)}
    assert set(openmetrics) == set(text_format)
    assert all(f.type == "gauge" for f in openmetrics.values())
    for name in ("netra_rm_pool_memory_capacity_bytes", "netra_rm_pool_cpu_allocated_ratio",
                 "netra_rm_pool_instances_available", "netra_rm_allocations", "netra_rm_waiters",
                 "netra_rm_service_up", "netra_rm_service_check_latency_seconds",
                 "netra_rm_system_memory_total_bytes", "netra_rm_system_cpu_usage_ratio",
                 "netra_rm_report_timestamp_seconds", "netra_rm_build_info"):
        assert name in openmetrics, name
    assert openmetrics["netra_rm_pool_memory_capacity_bytes"].unit == "bytes"


def test_pools_and_allocations_per_dimension(cli, stack: Path) -> None:
    allocated = cli("--config", str(stack), "allocate", "--layer", "tiny", "--category", "db",
                    "--memory-mb", "100", "--cpu-percent", "10")
    assert allocated.code == 0, allocated.stderr

    parsed = samples(cli("--config", str(stack), "status", "--format", "openmetrics").stdout)

    assert value(parsed, "netra_rm_pool_memory_capacity_bytes", layer="tiny") == 300 * MIB
    assert value(parsed, "netra_rm_pool_memory_allocated_bytes", layer="tiny") == 100 * MIB
    assert value(parsed, "netra_rm_pool_memory_available_bytes", layer="tiny") == 200 * MIB
    assert value(parsed, "netra_rm_pool_cpu_capacity_ratio", layer="tiny") == pytest.approx(0.3)
    assert value(parsed, "netra_rm_pool_cpu_allocated_ratio", layer="tiny") == pytest.approx(0.1)
    assert value(parsed, "netra_rm_pool_instances_capacity", layer="tiny") == 3
    assert value(parsed, "netra_rm_pool_instances_active", layer="tiny") == 1
    assert value(parsed, "netra_rm_pool_instances_available", layer="tiny") == 2
    assert value(parsed, "netra_rm_pool_instances_active", layer="api") == 0
    assert value(parsed, "netra_rm_allocations", layer="tiny", category="db") == 1
    assert value(parsed, "netra_rm_allocation_oldest_age_seconds", layer="tiny") >= 0
    assert value(parsed, "netra_rm_limit_memory_allocated_bytes") == 100 * MIB
    assert value(parsed, "netra_rm_limit_instances_capacity") == 1000
    assert value(parsed, "netra_rm_waiters", layer="tiny") == 0


def test_services_up_status_and_latency(cli, stack: Path) -> None:
    result = cli("--config", str(stack), "status", "--format", "openmetrics")
    parsed = samples(result.stdout)

    assert value(parsed, "netra_rm_service_up", service="web", kind="http") == 1
    assert value(parsed, "netra_rm_service_up", service="cache", kind="redis") == 0
    assert value(parsed, "netra_rm_service_up", service="app", kind="http") == 0
    assert value(parsed, "netra_rm_service_status", service="app", status="blocked") == 1
    assert value(parsed, "netra_rm_service_status", service="app", status="healthy") == 0
    assert value(parsed, "netra_rm_service_status", service="cache", status="unhealthy") == 1
    assert 0 < value(parsed, "netra_rm_service_check_latency_seconds", service="web") < 5
    assert SECRET not in result.stdout


def test_output_file_is_replaced_atomically(cli, stack: Path, tmp_path: Path) -> None:
    directory = tmp_path / "textfile"
    directory.mkdir()
    target = directory / "netra-rm.prom"
    target.write_text("# an older report\n")
    old_inode = target.stat().st_ino

    result = cli("--config", str(stack), "status", "--format", "openmetrics", "--output", str(target))

    assert result.code == 0, result.stderr
    assert result.stdout == ""
    text = target.read_text()
    assert text.endswith("# EOF\n")
    assert "netra_rm_service_up" in {f.name for f in parse_openmetrics(text)}
    assert target.stat().st_ino != old_inode  # a new file renamed over the old, not rewritten in place
    assert sorted(p.name for p in directory.iterdir()) == ["netra-rm.prom"]  # no temp file left
    assert stat.S_IMODE(target.stat().st_mode) & 0o044 == 0o044  # node_exporter may run as another user


def test_output_with_json_writes_the_json_document(cli, stack: Path, tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    result = cli("--config", str(stack), "status", "--json", "--output", str(target))
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    document = json.loads(target.read_text())
    assert set(document) >= {"resources", "services"}


def test_strict_still_writes_the_file_and_exits_1(cli, stack: Path, tmp_path: Path) -> None:
    target = tmp_path / "netra-rm.prom"
    result = cli("--config", str(stack), "status", "--strict", "--format", "openmetrics", "--output", str(target))
    assert result.code == 1
    assert target.read_text().endswith("# EOF\n")


def test_json_keeps_working_as_format_json(cli, stack: Path) -> None:
    by_flag = cli("--config", str(stack), "status", "--json")
    by_format = cli("--config", str(stack), "status", "--format", "json")
    global_flag = cli("--json", "--config", str(stack), "status")
    for result in (by_flag, by_format, global_flag):
        assert result.code == 0, result.stderr
        assert set(result.json()) == {"schema_version", "resources", "services"}


@pytest.mark.parametrize("args, message", [
    (("--format", "table", "--output", "x.prom"), "--output works with --format json or openmetrics"),
    (("--format", "github", "--output", "x.prom"), "--output works with --format json or openmetrics"),
    (("--json", "--format", "openmetrics"), "--json and --format openmetrics"),
    (("--format", "openmetrics", "--output", "no/such/dir/x.prom"), "cannot write --output"),
])
def test_bad_output_options_exit_2(cli, small_config: Path, args: tuple[str, ...], message: str) -> None:
    result = cli("--config", str(small_config), "status", *args)
    assert result.code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_unknown_format_is_a_usage_error(cli) -> None:
    result = cli("status", "--format", "xml")
    assert result.code == 2
    assert "xml" in result.stderr


def test_a_waiting_request_shows_in_the_metrics(cli, stack: Path, ledger_path: Path) -> None:
    from conftest import _entry_point

    taken = [cli("--config", str(stack), "allocate", "--layer", "tiny", "--category", "full").stdout.strip()
             for _ in range(3)]
    waiter = subprocess.Popen([*_entry_point(), "--config", str(stack), "allocate", "--layer", "tiny",
                               "--category", "queued", "--wait", "--timeout", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "NETRA_RM_LEDGER": str(ledger_path)})
    try:
        deadline = time.monotonic() + 60
        while True:  # until the queued request is in the ledger
            parsed = samples(cli("--config", str(stack), "status", "--format", "openmetrics").stdout)
            if value(parsed, "netra_rm_waiters", layer="tiny") == 1 or time.monotonic() > deadline:
                break
        assert value(parsed, "netra_rm_waiters", layer="tiny") == 1
        assert value(parsed, "netra_rm_waiters", layer="api") == 0
        assert value(parsed, "netra_rm_waiter_longest_wait_seconds", layer="tiny") >= 0
        assert value(parsed, "netra_rm_allocations", layer="tiny", category="full") == 3

        assert cli("release", taken[0]).code == 0
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        parsed = samples(cli("--config", str(stack), "status", "--format", "openmetrics").stdout)
        assert value(parsed, "netra_rm_waiters", layer="tiny") == 0
        assert value(parsed, "netra_rm_allocations", layer="tiny", category="queued") == 1
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


def test_waiters_are_counted_per_layer() -> None:
    """The renderer alone: two requests waiting in ``tiny``, the oldest for 30 s."""
    from netra_rm.render.openmetrics import render_openmetrics

    pool = {"max_memory_mb": 300, "allocated_memory_mb": 0, "available_memory_mb": 300, "max_cpu_percent": 30,
            "allocated_cpu_percent": 0, "available_cpu_percent": 30, "max_parallel_instances": 3,
            "active_instances": 0, "available_instances": 3, "dedicated": False}
    resources = {"resource_pools": {"tiny": pool, "api": pool}, "active_allocations": [],
                 "waiters": [{"layer": "tiny", "since": 970.0}, {"layer": "tiny", "since": 990.0}],
                 "global_limits": {}, "system_metrics": {}, "conflicts": []}
    text = render_openmetrics(resources, {"services": {}}, now=1000.0, version="0")
    parsed = samples(text)

    assert value(parsed, "netra_rm_waiters", layer="tiny") == 2
    assert value(parsed, "netra_rm_waiters", layer="api") == 0
    assert value(parsed, "netra_rm_waiter_longest_wait_seconds", layer="tiny") == 30
    assert list(parse_text_format(text))


def test_label_values_are_escaped() -> None:
    from netra_rm.render.openmetrics import render_openmetrics

    allocation = {"layer": "tiny", "category": 'say "hi"\\ \nbye', "age_seconds": 1.5}
    text = render_openmetrics({"resource_pools": {}, "active_allocations": [allocation]}, {"services": {}},
                              now=0.0, version="0")
    assert value(samples(text), "netra_rm_allocations", layer="tiny", category='say "hi"\\ \nbye') == 1


def test_allocate_and_release_load_neither_rich_nor_prometheus_client(home: Path, ledger_path: Path,
                                                                      small_config: Path) -> None:
    """Start-up speed: the commands CI runs most import no renderer and no service driver."""
    probe = (
        "import sys\n"
        "from netra_rm.cli.app import app\n"
        "def run(*args):\n"
        "    try:\n"
        "        app(list(args), prog_name='netra-rm', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"run('--config', {str(small_config)!r}, '--ledger', {str(ledger_path)!r}, 'allocate', '--layer', 'tiny',"
        " '--category', 'x')\n"
        f"run('--config', {str(small_config)!r}, '--ledger', {str(ledger_path)!r}, 'release', 'nosuchid')\n"
        "heavy = [m for m in ('rich', 'prometheus_client', 'pytest', 'psycopg', 'redis', 'httpx', "
        "'clickhouse_connect') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NETRA_RM_LEDGER": str(ledger_path)})
    assert "HEAVY []" in proc.stderr, proc.stderr
