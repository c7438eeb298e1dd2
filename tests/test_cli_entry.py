"""What every start of `netra-rm` inherits: pipes that close under it, signal
dispositions from its parent, and global options written after the command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netra_rm.cli.argv import hoist_global_options

from conftest import _entry_point

SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CLICKHOUSE_URL", "BACKEND_URL", "AUTH_SERVICE_URL",
                     "FRONTEND_URL", "WEBSOCKET_URL")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(home: Path, ledger_path: Path) -> dict[str, str]:
    """Every service at a port nobody listens on: checks fail fast, on any machine."""
    port = closed_port()
    urls = {name: f"http://127.0.0.1:{port}/" for name in SERVICE_VARIABLES}
    urls.update(DATABASE_URL=f"postgresql://u:pw-Z9@127.0.0.1:{port}/db", REDIS_URL=f"redis://127.0.0.1:{port}/0",
                WEBSOCKET_URL=f"ws://127.0.0.1:{port}/ws", CLICKHOUSE_URL=f"http://127.0.0.1:{port}/default")
    return {**os.environ, "NETRA_RM_LEDGER": str(ledger_path), **urls}


def netra_rm_line(*args: str) -> str:
    return " ".join([*_entry_point(), *args])


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- pipes -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, verdict", [
    (("layer", "fast_feedback"), 0),
    (("layer", "core_integration"), 1),  # its services are down: still 1, for that reason
    (("status",), 0),
    (("status", "--strict"), 1),
    (("layer", "fast_feedback", "--format", "github"), 0),
])
def test_head_keeps_the_verdict(env: dict[str, str], args: tuple[str, ...], verdict: int) -> None:
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", f"{netra_rm_line(*args)} | head -1"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == verdict, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr
    assert "unexpected" not in proc.stderr


def run_into_closed_pipe(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run netra-rm with a stdout whose reader is already gone: every write fails (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*_entry_point(), *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args, verdict", [
    (("status",), 0), (("layer", "fast_feedback"), 0), (("layer", "core_integration"), 1),
    (("graph",), 0), (("config", "show"), 0), (("--json", "status"), 0),
])
def test_a_closed_stdout_ends_output_quietly(env: dict[str, str], args: tuple[str, ...], verdict: int) -> None:
    proc = run_into_closed_pipe(env, *args)
    assert proc.returncode == verdict, proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr and "Exception" not in proc.stderr


def test_the_monitor_stops_when_its_reader_goes(env: dict[str, str]) -> None:
    proc = run_into_closed_pipe(env, "monitor", "--interval", "0.5", "--services-interval", "0", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# -- signals as inherited --------------------------------------------------------------

def ignore_sigint() -> None:
    """Start the child as `nohup` or a background job of a script would: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def signal_masks(pid: int) -> dict[str, int]:
    fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    return {name: int(fields[name].strip(), 16) for name in ("SigIgn", "SigCgt", "SigBlk")}


def handles(pid: int, sig: signal.Signals) -> bool:
    """Does ``pid`` catch (or block, to wait for) ``sig`` now, rather than ignore it?"""
    try:
        masks = signal_masks(pid)
    except (OSError, KeyError):
        return False
    bit = 1 << (sig - 1)
    return not masks["SigIgn"] & bit and bool((masks["SigCgt"] | masks["SigBlk"]) & bit)


def start_ignoring_sigint(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*_entry_point(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=ignore_sigint, stdin=subprocess.DEVNULL)
    assert signal_masks(proc.pid)["SigIgn"] & (1 << (signal.SIGINT - 1)) or proc.poll() is not None or \
        handles(proc.pid, signal.SIGINT)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_monitor_stops_cleanly_though_started_with_sigint_ignored(env: dict[str, str], sig: signal.Signals) -> None:
    proc = start_ignoring_sigint(env, "monitor", "--json", "--interval", "0.5", "--services-interval", "0")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("{")  # it runs
        wait_for(lambda: handles(proc.pid, sig), what=f"the monitor to handle {sig.name}")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_layer_timeout_stops_cleanly_though_started_with_sigint_ignored(env: dict[str, str], sig: signal.Signals,
                                                                        code: int) -> None:
    proc = start_ignoring_sigint(env, "layer", "core_integration", "--timeout", "120")
    try:
        wait_for(lambda: handles(proc.pid, sig), what=f"layer to handle {sig.name}")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_run_passes_sigint_on_though_started_with_sigint_ignored(env: dict[str, str]) -> None:
    proc = start_ignoring_sigint(env, "run", "--layer", "fast_feedback", "--category", "t", "--",
                                 "sh", "-c", "echo started; exec sleep 120")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        wait_for(lambda: handles(proc.pid, signal.SIGINT), what="run to wait for SIGINT")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr  # CMD ended by the SIGINT passed on


# -- global options anywhere -----------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["status", "-q"], ["-q", "status"]),
    (["status", "--json", "--strict"], ["--json", "status", "--strict"]),
    (["layer", "x", "--config", "c.yaml", "--timeout", "5"], ["--config", "c.yaml", "layer", "x", "--timeout", "5"]),
    (["layer", "x", "--config=c.yaml"], ["--config=c.yaml", "layer", "x"]),
    (["--no-color", "release", "a", "--ledger", "l.json", "b"],
     ["--no-color", "--ledger", "l.json", "release", "a", "b"]),
    (["config", "show", "--no-color"], ["--no-color", "config", "show"]),
    # a value is never taken for an option
    (["allocate", "--category", "-q", "--layer", "l"], ["allocate", "--category", "-q", "--layer", "l"]),
    # after `--`, and in `run` from CMD on, the words are CMD's
    (["run", "--layer", "l", "-q", "--", "pytest", "-q"], ["-q", "run", "--layer", "l", "--", "pytest", "-q"]),
    (["run", "--layer", "l", "pytest", "-q", "--json"], ["run", "--layer", "l", "pytest", "-q", "--json"]),
    (["up", "--", "-q"], ["up", "--", "-q"]),
    (["--layer", "x", "--timeout", "3"], ["--layer", "x", "--timeout", "3"]),
    (["nosuch", "-q"], ["nosuch", "-q"]),
])
def test_global_options_are_moved_before_the_command(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(argv).argv == expected


def test_global_options_work_after_the_command(cli, small_config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "ledger.json"
    allocated = cli("allocate", "--layer", "tiny", "--category", "c", "--config", str(small_config),
                    "--ledger", str(other), "-q", "--no-color")
    assert allocated.code == 0, allocated.stderr
    ident = allocated.stdout.strip()
    assert ident in other.read_text()

    released = cli("release", ident, "--ledger", str(other), "-q")
    assert (released.code, released.stdout, released.stderr) == (0, "", "")

    validated = cli("config", "validate", "--config", str(small_config), "-q")
    assert (validated.code, validated.stderr) == (0, "")


def test_an_unknown_option_after_the_command_is_still_a_usage_error(cli) -> None:
    result = cli("status", "--frobnicate")
    assert result.code == 2
    assert "--frobnicate" in result.stderr


# -- -q: the essential or nothing ------------------------------------------------------

def test_quiet_prints_the_verdict_line_or_nothing(cli, env: dict[str, str]) -> None:
    ident = cli("-q", "allocate", "--layer", "fast_feedback", "--category", "q", env=env)
    assert ident.code == 0 and len(ident.stdout.split()) == 1 and ident.stderr == ""

    status = cli("status", "-q", env=env)
    assert status.code == 0
    assert status.stdout.splitlines() == [status.stdout.strip()]
    assert status.stdout.startswith("0 of 7 services healthy") and "1 allocation(s) active" in status.stdout

    ready = cli("layer", "fast_feedback", "-q", env=env)
    assert (ready.code, ready.stdout, ready.stderr) == (0, "READY  layer fast_feedback\n", "")
    not_ready = cli("layer", "core_integration", "-q", env=env)
    assert not_ready.code == 1
    assert not_ready.stdout == "NOT READY  layer core_integration: missing postgresql, redis\n"
    assert not_ready.stderr == ""

    verified = cli("verify", "-q", env=env)
    assert verified.code == 0 and verified.stdout.startswith("CLEAN  1 event(s) checked") and \
        len(verified.stdout.splitlines()) == 1

    assert set(cli("graph", "-q", env=env).stdout.splitlines()[0].split()) == {"postgresql", "redis", "clickhouse"}
    assert cli("history", "-q", env=env).stdout.split("\t")[1:3] == ["grant", ident.stdout.strip()]
    released = cli("release", ident.stdout.strip(), "-q", env=env)
    assert (released.code, released.stdout, released.stderr) == (0, "", "")
    cleaned = cli("cleanup", "-q", env=env)
    assert (cleaned.code, cleaned.stdout, cleaned.stderr) == (0, "", "")


def test_a_first_run_says_how_to_point_netra_rm_at_services(cli, home: Path) -> None:
    first = cli("status", env={"NO_COLOR": "1"})
    assert first.code == 0
    hints = [line for line in first.stdout.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1
    assert "DATABASE_URL" in hints[0] and "REDIS_URL" in hints[0] and "--config" in hints[0]

    configured = cli("status", env={"NO_COLOR": "1", "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})
    assert "hint:" not in configured.stdout
