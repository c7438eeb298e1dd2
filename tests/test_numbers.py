"""Every number netra-rm accepts is finite and in range: options, environment variables,
configuration values and ledger URL parameters refuse NaN, infinities, values past the
documented maxima and negatives, with exit 2 naming the setting and the accepted range."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netra_rm import numbers
from netra_rm.cli.app import app
from netra_rm.config import env as envmod
from netra_rm.config import load_config
from netra_rm.errors import ConfigError, ExitCode, UsageError
from netra_rm.ledger.server import options_from

BAD = ("nan", "NaN", "inf", "-inf", "infinity", "1e23", "-1")


@pytest.mark.parametrize("value", [*BAD, float("nan"), float("inf"), 10**400, True, "abc", None])
def test_problem_refuses_every_non_finite_or_out_of_range_value(value: object) -> None:
    why = numbers.problem(value, numbers.DURATION_MINUTES)
    assert why is not None and "above 0 and at most 525600" in why


@pytest.mark.parametrize(("value", "expected"), [("30", 30), (" 2.5 ", 2.5), (525600, 525600), (1e-3, 1e-3)])
def test_finite_accepts_numbers_in_range(value: object, expected: float) -> None:
    assert numbers.finite("--duration-minutes", value, numbers.DURATION_MINUTES) == expected


def test_integer_ranges_take_whole_numbers_only() -> None:
    assert numbers.finite("--memory-mb", "256", numbers.MEMORY_MB) == 256
    assert numbers.finite("--memory-mb", 256.0, numbers.MEMORY_MB) == 256
    for bad in ("2.5", 2.5, "nan", "1e23", -1, 2**30 + 1):
        with pytest.raises(UsageError, match=r"--memory-mb must be a whole number of MB from 0 to 1073741824"):
            numbers.finite("--memory-mb", bad, numbers.MEMORY_MB)


# -- command-line options (Typer parses them: in-process is enough) -----------------------

ALLOCATE = ["allocate", "--layer", "fast_feedback", "--category", "c"]
RUN = ["run", "--layer", "fast_feedback", "--category", "c"]
OPTIONS = [
    (ALLOCATE, "--memory-mb"), (ALLOCATE, "--cpu-percent"), (ALLOCATE, "--duration-minutes"),
    (ALLOCATE, "--timeout"), (ALLOCATE, "--owner-pid"),
    (RUN, "--memory-mb"), (RUN, "--cpu-percent"), (RUN, "--duration-minutes"), (RUN, "--timeout"),
    (["layer", "fast_feedback"], "--timeout"), (["up", "--dry-run"], "--timeout"),
    (["down", "--dry-run"], "--timeout"), (["history"], "--limit"),
    (["monitor"], "--interval"), (["monitor"], "--count"), (["monitor"], "--services-interval"),
    (["--monitor"], "--interval"), (["--layer", "fast_feedback"], "--timeout"),
]


@pytest.mark.parametrize(("command", "option"), OPTIONS, ids=[f"{c[0]}{o}" for c, o in OPTIONS])
def test_every_numeric_option_refuses_nan_inf_huge_and_negative(command: list[str], option: str) -> None:
    runner = CliRunner()
    for bad in BAD:
        tail = ["--", "true"] if command[0] == "run" else []
        result = runner.invoke(app, [*command, f"{option}={bad}", *tail])
        assert result.exit_code == ExitCode.USAGE, (option, bad, result.output)
        assert option in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""


def _flat(text: str) -> str:
    """Click's error text without the box Rich may draw around it."""
    return " ".join(text.translate(str.maketrans("", "", "│╭╮╰╯─")).split())


def test_option_messages_name_the_accepted_range() -> None:
    result = CliRunner().invoke(app, [*ALLOCATE, "--cpu-percent", "nan"])
    assert "'--cpu-percent': must be a percentage from 0 to 100, got nan." in _flat(result.stderr)
    result = CliRunner().invoke(app, ["monitor", "--interval", "inf"])
    assert "'--interval': must be a number of seconds from 0.5 to 86400, got inf." in _flat(result.stderr)


def test_the_issues_attacks_through_the_real_cli(cli, ledger_path: Path) -> None:
    """``--cpu-percent nan`` switched CPU admission off; ``--duration-minutes inf`` made an
    allocation that broke ``status`` for everyone; ``--timeout nan`` waited forever."""
    for args in ([*ALLOCATE, "--cpu-percent", "nan"], [*ALLOCATE, "--duration-minutes", "inf"],
                 [*ALLOCATE, "--duration-minutes", "1e23"], [*ALLOCATE, "--wait", "--timeout", "nan"],
                 [*RUN, "--cpu-percent", "nan", "--", "true"],  # the fast path of `run`
                 ["monitor", "--interval", "nan", "--count", "1"]):
        r = cli(*args, timeout=30)
        assert r.code == 2, (args, r.stderr)
        assert r.stdout == "" and "Traceback" not in r.stderr
    assert not ledger_path.exists() or json.loads(ledger_path.read_text()).get("allocations") in ([], {})
    assert cli("--json", "status").code == 0


# -- environment -------------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["MAX_MEMORY_ALLOCATION_MB", "MAX_CPU_ALLOCATION_PERCENT",
                                      "MAX_PARALLEL_INSTANCES"])
@pytest.mark.parametrize("bad", BAD)
def test_cap_variables_refuse_bad_numbers(variable: str, bad: str) -> None:
    with pytest.raises(UsageError, match=rf"^{variable} must be .* got '{bad}'\.$"):
        load_config(env={variable: bad})


@pytest.mark.parametrize("bad", [*BAD, "0.5x", "2e6"])
def test_lock_timeout_and_journal_size_variables(bad: str) -> None:
    assert envmod.lock_timeout({}) == 10.0
    assert envmod.lock_timeout({"NETRA_RM_LOCK_TIMEOUT": "2.5"}) == 2.5
    assert envmod.lock_timeout({"NETRA_RM_LOCK_TIMEOUT": "0"}) == 0.0
    with pytest.raises(UsageError, match=r"^NETRA_RM_LOCK_TIMEOUT must be a number of seconds from 0 to 86400"):
        envmod.lock_timeout({"NETRA_RM_LOCK_TIMEOUT": bad})
    assert envmod.journal_max_bytes({"NETRA_RM_JOURNAL_MAX_BYTES": "40000"}) == 40000
    if bad != "2e6":  # two million bytes is a fine journal size
        with pytest.raises(UsageError, match=r"^NETRA_RM_JOURNAL_MAX_BYTES must be a whole number of bytes"):
            envmod.journal_max_bytes({"NETRA_RM_JOURNAL_MAX_BYTES": bad})


def test_a_bad_cap_variable_exits_2_through_the_cli(cli) -> None:
    r = cli("status", env={"MAX_CPU_ALLOCATION_PERCENT": "nan"})
    assert r.code == 2 and "MAX_CPU_ALLOCATION_PERCENT must be a percentage above 0" in r.stderr
    assert "Traceback" not in r.stderr


# -- configuration -----------------------------------------------------------------------

POOL = "layers:\n  x:\n    pool: {memory_mb: M, cpu_percent: C, instances: I}\n"
CONFIG_VALUES = [
    (POOL.replace("M", "VALUE").replace("C", "5").replace("I", "1"), "layers.x.pool.memory_mb"),
    (POOL.replace("M", "5").replace("C", "VALUE").replace("I", "1"), "layers.x.pool.cpu_percent"),
    (POOL.replace("M", "5").replace("C", "5").replace("I", "VALUE"), "layers.x.pool.instances"),
    (POOL.replace("M", "5").replace("C", "5").replace("I", "1") + "    default_cpu_percent: VALUE\n",
     "layers.x.default_cpu_percent"),
    ("pools:\n  lic: {instances: VALUE}\n", "pools.lic.instances"),
    ("pools:\n  lic: {instances: 1, cpu_percent: VALUE}\n", "pools.lic.cpu_percent"),
    ("limits:\n  max_memory_mb: VALUE\n", "limits.max_memory_mb"),
    ("limits:\n  max_cpu_percent: VALUE\n", "limits.max_cpu_percent"),
    ("limits:\n  max_parallel_instances: VALUE\n", "limits.max_parallel_instances"),
    ("machine:\n  memory_reserve_mb: VALUE\n", "machine.memory_reserve_mb"),
    ("checks:\n  deadline: VALUE\n", "checks.deadline"),
    ("services:\n  redis: {kind: redis, url: 'redis://h', timeout: VALUE}\n", "services.redis.timeout"),
    ("thresholds:\n  hold_seconds: VALUE\n", "thresholds.hold_seconds"),
    ("thresholds:\n  load_per_core: {warning: 1, critical: VALUE}\n", "thresholds.load_per_core.critical"),
    ("allocations:\n  default_duration_minutes: VALUE\n", "allocations.default_duration_minutes"),
    ("allocations:\n  lease_seconds: VALUE\n", "allocations.lease_seconds"),
]


@pytest.mark.parametrize(("template", "key"), CONFIG_VALUES, ids=[k for _, k in CONFIG_VALUES])
def test_every_configuration_number_refuses_nan_inf_huge_and_negative(write_config, template: str,
                                                                      key: str) -> None:
    for bad in (".nan", ".inf", "-.inf", "1.0e+23", "-1"):
        path = write_config(template.replace("VALUE", bad))
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        message = str(info.value)
        assert message.startswith(f"{path}: {key}: must be "), message
        assert " to " in message or "at most" in message


def test_a_configuration_number_exits_2_through_the_cli(cli, write_config) -> None:
    path = write_config("allocations:\n  default_duration_minutes: .inf\n")
    r = cli("--config", str(path), "allocate", "--layer", "fast_feedback", "--category", "c")
    assert r.code == 2 and "allocations.default_duration_minutes: must be a number of minutes" in r.stderr


# -- ledger URLs and the pytest plugin -----------------------------------------------------

@pytest.mark.parametrize("bad", [*BAD, "0"])
def test_ledger_url_timeout_refuses_bad_numbers(bad: str) -> None:
    with pytest.raises(UsageError, match=r"timeout= in the ledger URL .* above 0 and at most 3600"):
        options_from({"timeout": bad}, "redis://h/0")
    assert options_from({"timeout": "2.5"}, "redis://h/0").connect_timeout == 2.5


def test_pytest_plugin_options_refuse_bad_numbers() -> None:
    from netra_rm.pytest_plugin import _number

    for name in ("WAIT_SECONDS", "MEMORY_MB", "CPU_PERCENT", "DURATION_MINUTES"):
        for bad in BAD:
            with pytest.raises(argparse.ArgumentTypeError):
                _number(name)(bad)
    assert _number("CPU_PERCENT")("12.5") == 12.5


# -- the Python API ----------------------------------------------------------------------------

def test_the_python_api_refuses_bad_numbers(home: Path, tmp_path: Path) -> None:
    from netra_rm import ResourceRequirements, create_resource_manager, ensure_layer_resources_available

    options = {"ledger": str(tmp_path / "ledger.json"), "env": {}}
    with pytest.raises(UsageError, match="monitor_interval must be a number of seconds above 0 and at most 86400"):
        create_resource_manager(monitor_interval=float("nan"), **options)
    with create_resource_manager(enable_monitoring=False, **options) as rm:
        for requirements, duration in ((None, float("inf")), (None, 1e23),
                                       (ResourceRequirements(min_cpu_percent=float("nan")), 30),
                                       (ResourceRequirements(min_memory_mb=-1), 30)):
            with pytest.raises(UsageError):
                rm.allocate_resources("fast_feedback", "c", requirements, duration_minutes=duration)
        with pytest.raises(UsageError, match="timeout_seconds"):
            ensure_layer_resources_available(rm, "fast_feedback", timeout_seconds=float("nan"))
        with pytest.raises(UsageError, match="timeout_seconds"):
            rm.ensure_layer_services("fast_feedback", timeout_seconds=float("inf"))
        assert rm.get_resource_status()["total_allocations"] == 0
