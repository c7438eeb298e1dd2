"""`netra-rm run`: CMD owns the allocation, sees it in its environment, gets our
signals, and its exit code is ours; the allocation goes when CMD goes, however it goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import _entry_point

TINY = ["--layer", "tiny", "--category", "runner", "--memory-mb", "100", "--cpu-percent", "10"]

# A CMD for the tests: writes its pid and environment to files, then waits for a signal.
CHILD = """
import json, os, signal, sys, time
out = sys.argv[1]
def on(signum, frame):
    with open(out + ".signal", "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(100 + signum)
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, on)
with open(out + ".env.tmp", "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith(("NETRA_RM_", "INHERITED"))}
              | {"pid": os.getpid(), "PATH": os.environ.get("PATH")}, f)
os.replace(out + ".env.tmp", out + ".env")
if len(sys.argv) > 2:
    sys.exit(int(sys.argv[2]))
while True:
    signal.pause()
"""


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def env(small_config: Path, ledger_path: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "NETRA_RM_CONFIG": str(small_config), "NETRA_RM_LEDGER": str(ledger_path)}


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*_entry_point(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def ledger_allocations(ledger_path: Path) -> list[dict]:
    if not ledger_path.exists():
        return []
    return json.loads(ledger_path.read_text())["allocations"]


def read_env(out: Path) -> dict | None:
    target = out.with_name(out.name + ".env")
    return json.loads(target.read_text()) if target.exists() else None


def process_gone(pid: int) -> bool:
    from netra_rm.core import liveness

    return not liveness.is_alive(pid, None)


def test_exit_code_environment_and_release(cli, small_config: Path, ledger_path: Path, child: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("--config", str(small_config), "run", *TINY, "--", sys.executable, str(child), str(out), "7",
                 env={"INHERITED_VARIABLE": "kept"})
    assert result.code == 7, result.stderr
    assert result.stderr == ""
    seen = read_env(out)
    assert seen is not None
    assert seen["INHERITED_VARIABLE"] == "kept" and seen["PATH"] == os.environ["PATH"], "CMD inherits our environment"
    assert seen["NETRA_RM_LAYER"] == "tiny" and seen["NETRA_RM_CATEGORY"] == "runner"
    assert seen["NETRA_RM_MEMORY_MB"] == "100" and seen["NETRA_RM_CPU_PERCENT"] == "10"
    assert seen["NETRA_RM_SLOT"] == "0" and int(seen["NETRA_RM_FENCING_TOKEN"]) > 0
    assert len(seen["NETRA_RM_ALLOCATION_ID"]) == 12
    assert ledger_allocations(ledger_path) == []
    history = cli("history", "--json").json()["events"]
    assert [(e["event"], e["id"]) for e in history] == [("grant", seen["NETRA_RM_ALLOCATION_ID"]),
                                                         ("release", seen["NETRA_RM_ALLOCATION_ID"])]
    assert history[0]["owner"]["pid"] == seen["pid"], "the allocation is owned by CMD's process"


def test_exit_zero_and_stdio_pass_through(cli, small_config: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--", sys.executable, "-c",
                 "import sys; sys.stdout.write(sys.stdin.read().upper())", input="hello\n")
    assert result.code == 0
    assert result.stdout == "HELLO\n"


def test_cmd_is_looked_up_in_path(cli, small_config: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "netra-rm-test-tool"
    tool.write_text(f"#!{sys.executable}\nimport os, sys\nprint('slot', os.environ['NETRA_RM_SLOT'])\n")
    tool.chmod(0o755)
    result = cli("--config", str(small_config), "run", *TINY, "--", "netra-rm-test-tool",
                 env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.code == 0, result.stderr
    assert result.stdout == "slot 0\n"


def test_options_after_cmd_belong_to_cmd(cli, small_config: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, sys.executable, "-c",
                 "import sys; print(sys.argv[1:])", "--layer", "x")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "['--layer', 'x']"


def test_slots_and_fencing_tokens_differ_between_concurrent_runs(env: dict[str, str], child: Path,
                                                                 tmp_path: Path, ledger_path: Path) -> None:
    outs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [start(env, "run", *TINY, "--", sys.executable, str(child), str(out)) for out in outs]
    try:
        seen = [wait_for(lambda o=o: read_env(o), what="CMD started") for o in outs]
        assert {s["NETRA_RM_SLOT"] for s in seen} == {"0", "1"}
        assert len({s["NETRA_RM_FENCING_TOKEN"] for s in seen}) == 2
        assert len(ledger_allocations(ledger_path)) == 2
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    assert ledger_allocations(ledger_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_wrapper_is_forwarded_and_allocation_released(env: dict[str, str], child: Path, tmp_path: Path,
                                                                ledger_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    proc = start(env, "run", *TINY, "--", sys.executable, str(child), str(out))
    seen = wait_for(lambda: read_env(out), what="CMD started")
    assert len(ledger_allocations(ledger_path)) == 1
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 100 + sig, stderr  # CMD's own exit code, from its handler
    assert out.with_name("out.signal").read_text() == sig.name
    assert process_gone(seen["pid"])
    assert ledger_allocations(ledger_path) == []


def test_allocation_is_held_past_its_hold_time_while_cmd_runs(env: dict[str, str], child: Path, tmp_path: Path,
                                                              ledger_path: Path, cli) -> None:
    out = tmp_path / "out"
    # a 6 s hold: run renews it well before it ends, even on a machine busy enough to
    # delay a thread by a second or two
    proc = start(env, "run", *TINY, "--duration-minutes", "0.1", "--", sys.executable, str(child), str(out))
    try:
        seen = wait_for(lambda: read_env(out), what="CMD started")
        [granted] = ledger_allocations(ledger_path)
        first_expiry = granted["expires_at"]
        assert first_expiry - granted["created_at"] == pytest.approx(6.0, abs=0.01)
        wait_for(lambda: time.time() > first_expiry + 1.0, what="the first expiry to pass", timeout=30)
        cli("cleanup")  # a transaction: it would reclaim an expired allocation
        [held] = ledger_allocations(ledger_path)
        assert held["id"] == seen["NETRA_RM_ALLOCATION_ID"]
        assert held["expires_at"] > time.time(), "run keeps pushing the expiry ahead"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 100 + signal.SIGTERM and stderr == ""
    assert ledger_allocations(ledger_path) == []
    events = [e["event"] for e in cli("history", "--json").json()["events"]]
    assert events == ["grant", "release"], "never expired, released when CMD ended"
    assert cli("verify").code == 0


def test_cmd_killed_by_signal_gives_128_plus_n(cli, small_config: Path, ledger_path: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--", sys.executable, "-c",
                 "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert result.code == 128 + signal.SIGKILL
    assert ledger_allocations(ledger_path) == []


def test_wrapper_and_cmd_killed_outright_allocation_reclaimed(env: dict[str, str], child: Path, tmp_path: Path,
                                                              ledger_path: Path, cli) -> None:
    out = tmp_path / "out"
    proc = start(env, "run", *TINY, "--", sys.executable, str(child), str(out))
    seen = wait_for(lambda: read_env(out), what="CMD started")
    proc.kill()
    proc.wait(timeout=30)
    # the wrapper is gone, CMD still runs and still owns its allocation
    assert not process_gone(seen["pid"])
    status = cli("cleanup", "--json").json()
    assert status["released"] == []
    assert [a["id"] for a in ledger_allocations(ledger_path)] == [seen["NETRA_RM_ALLOCATION_ID"]]
    os.kill(seen["pid"], signal.SIGKILL)
    wait_for(lambda: process_gone(seen["pid"]), what="CMD gone")
    released = cli("cleanup", "--json").json()["released"]
    assert [(r["id"], r["reason"]) for r in released] == [(seen["NETRA_RM_ALLOCATION_ID"], "owner gone")]
    assert ledger_allocations(ledger_path) == []
    assert cli("verify").code == 0


def test_command_not_found_exits_2_and_allocates_nothing(cli, small_config: Path, ledger_path: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY, "--", "netra-rm-no-such-command", "x")
    assert result.code == 2
    assert result.stdout == ""
    assert "cannot run netra-rm-no-such-command: command not found" in result.stderr
    assert ledger_allocations(ledger_path) == []


def test_exec_failure_after_allocating_releases(cli, small_config: Path, ledger_path: Path, tmp_path: Path) -> None:
    """A file that looks executable but is not a program: exec fails after the allocation
    was granted; it is released, and the error names the file."""
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\x00\x01\x02 not a program")
    bogus.chmod(0o755)
    result = cli("--config", str(small_config), "run", *TINY, "--", str(bogus))
    assert result.code == 2
    assert f"cannot run {bogus}: exec format error" in result.stderr
    assert ledger_allocations(ledger_path) == []
    assert [e["event"] for e in cli("history", "--json").json()["events"]] == ["grant", "release"]


def test_no_command_is_a_usage_error(cli, small_config: Path) -> None:
    result = cli("--config", str(small_config), "run", *TINY)
    assert result.code == 2
    assert "CMD" in result.stderr


def test_full_pool_exits_3_without_starting_cmd(cli, small_config: Path, tmp_path: Path) -> None:
    held = cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "big",
               "--memory-mb", "300")
    assert held.code == 0
    marker = tmp_path / "ran"
    result = cli("--config", str(small_config), "run", *TINY, "--timeout", "0.2", "--", sys.executable, "-c",
                 f"open({str(marker)!r}, 'w')")
    assert result.code == 3
    assert "no capacity" in result.stderr
    assert not marker.exists()
    immediate = cli("--config", str(small_config), "run", *TINY, "--", "true")
    assert immediate.code == 3


def test_run_waits_for_room_then_runs(env: dict[str, str], cli, small_config: Path, child: Path,
                                      tmp_path: Path, ledger_path: Path) -> None:
    held = cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "big",
               "--memory-mb", "300")
    out = tmp_path / "out"
    proc = start(env, "run", *TINY, "--wait", "--timeout", "60", "--", sys.executable, str(child), str(out), "0")
    wait_for(lambda: json.loads(ledger_path.read_text())["waiters"], what="run queued")
    assert read_env(out) is None
    assert cli("release", held.stdout.strip()).code == 0
    assert proc.wait(timeout=60) == 0
    assert read_env(out)["NETRA_RM_LAYER"] == "tiny"
    assert json.loads(ledger_path.read_text())["waiters"] == []


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_wrapper_killed_while_waiting_leaves_nothing_behind(env: dict[str, str], cli, small_config: Path,
                                                            tmp_path: Path, ledger_path: Path) -> None:
    """Killed in the queue: the blocked child exits without running CMD, the queue drops
    the dead waiter, and nothing is allocated."""
    cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "big", "--memory-mb", "300")
    marker = tmp_path / "ran"
    proc = start(env, "run", *TINY, "--wait", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    wait_for(lambda: json.loads(ledger_path.read_text())["waiters"], what="run queued")
    blocked = _children(proc.pid)
    assert len(blocked) == 1
    proc.kill()
    proc.wait(timeout=30)
    wait_for(lambda: process_gone(blocked[0]), what="the blocked child to exit")
    assert not marker.exists()
    status = cli("--json", "status").json()["resources"]
    assert status["waiters"] == []
    assert [a["category"] for a in status["active_allocations"]] == ["big"]


def test_sigterm_while_waiting_leaves_the_queue(env: dict[str, str], cli, small_config: Path,
                                                ledger_path: Path) -> None:
    cli("--config", str(small_config), "allocate", "--layer", "tiny", "--category", "big", "--memory-mb", "300")
    proc = start(env, "run", *TINY, "--wait", "--", "true")
    wait_for(lambda: json.loads(ledger_path.read_text())["waiters"], what="run queued")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM while waiting" in stderr
    assert json.loads(ledger_path.read_text())["waiters"] == []


# -- the fast path (no Typer) and the Typer command stay the same command ------------------------

def test_fast_path_knows_exactly_the_typer_commands_options() -> None:
    import typer.main

    from netra_rm.cli.app import app
    from netra_rm.cli.fast_run import GLOBAL_OPTIONS, RUN_OPTIONS

    root = typer.main.get_command(app)
    run = root.commands["run"]
    typer_run = {opt: not param.is_flag for param in run.params if param.param_type_name == "option"
                 for opt in param.opts if opt not in ("--help", "-h")}
    assert typer_run == RUN_OPTIONS
    typer_global = {opt: not param.is_flag for param in root.params if param.param_type_name == "option"
                    for opt in param.opts}
    assert {k: typer_global[k] for k in GLOBAL_OPTIONS} == GLOBAL_OPTIONS


@pytest.mark.parametrize("argv, handled", [
    (["run", "--layer", "l", "--category", "c", "--", "true"], True),
    (["run", "--layer=l", "--category=c", "--wait", "--timeout", "5", "true", "-x"], True),
    (["--config", "f.yaml", "-q", "run", "--layer", "l", "--category", "c", "--requires", "redis", "true"], True),
    (["run", "--help"], False),
    (["run", "--layer", "l", "--category", "c", "-h", "--", "true"], False),
    (["run", "--layer", "l", "--category", "c"], False),
    (["run", "--layer", "l", "--", "true"], False),
    (["run", "--layer", "l", "--category", "c", "--bogus", "--", "true"], False),
    (["run", "--layer", "l", "--category", "c", "--wait=yes", "--", "true"], False),
    (["--json", "run", "--layer", "l", "--category", "c", "--", "true"], False),
    (["status"], False),
])
def test_fast_path_parses_or_hands_over(argv: list[str], handled: bool) -> None:
    from netra_rm.cli.fast_run import parse

    args = parse(argv)
    assert (args is not None) == handled
    if args is not None:
        assert args.options["--layer"] == "l" and args.command[0] == "true"


@pytest.mark.parametrize("prefix", [[], ["--json"]], ids=["fast path", "through Typer"])
def test_both_paths_behave_alike(cli, small_config: Path, ledger_path: Path, child: Path, tmp_path: Path,
                                 prefix: list[str]) -> None:
    out = tmp_path / "out"
    result = cli(*prefix, "--config", str(small_config), "run", *TINY, "--", sys.executable, str(child), str(out),
                 "5")
    assert result.code == 5 and result.stdout == "" and result.stderr == ""
    assert read_env(out)["NETRA_RM_LAYER"] == "tiny"
    missing = cli(*prefix, "--config", str(small_config), "run", *TINY, "--", "netra-rm-no-such-command")
    assert missing.code == 2 and "command not found" in missing.stderr
    unknown = cli(*prefix, "--config", str(small_config), "run", "--layer", "nope", "--category", "c", "--", "true")
    assert unknown.code == 2 and "tiny" in unknown.stderr
    assert ledger_allocations(ledger_path) == []
