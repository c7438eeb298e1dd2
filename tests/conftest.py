"""Shared fixtures: every path points at tmp_path, and the CLI runs as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/servers.py and helpers

from backends import backend, server_backend  # noqa: E402,F401 - a ledger per backend, as a fixture
from ci_stack import stack, web_server  # noqa: E402,F401 - the small CI stack, as fixtures
from hostile import other_user, shared_dir  # noqa: E402,F401 - another local user, a 1777 directory
from servers import *  # noqa: E402,F403 - the real-server fixtures (pg_server, live_servers, ...)
from start_commands import pg, pg_cluster, redis  # noqa: E402,F401 - servers that `up` starts, as fixtures

_SCRUBBED = ("DATABASE_URL", "REDIS_URL", "CLICKHOUSE_URL", "BACKEND_URL", "AUTH_SERVICE_URL", "FRONTEND_URL",
             "WEBSOCKET_URL", "MAX_MEMORY_ALLOCATION_MB", "MAX_CPU_ALLOCATION_PERCENT", "MAX_PARALLEL_INSTANCES",
             "NETRA_RM_CONFIG", "NETRA_RM_LEDGER", "NETRA_RM_DEBUG", "NETRA_RM_HOST_ID", "NO_COLOR",
             "FORCE_COLOR", "GITHUB_STEP_SUMMARY")


def _entry_point() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m netra_rm``."""
    candidate = Path(sys.executable).with_name("netra-rm")
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("netra-rm")
    return [found] if found else [sys.executable, "-m", "netra_rm"]


@dataclass
class Result:
    """A finished CLI run: exit code, stdout and stderr, kept apart."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's ledger or cache."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and state directory; the service and limit variables cleared."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_STATE_HOME", str(h / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(h / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    for name in _SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    return h


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "ledger.json"


#: Commands whose process is the point (it forks, execs CMD or owns a terminal): the
#: ``cli`` fixture runs them as real processes; every other command runs in-process.
PROCESS_COMMANDS = {"run", "monitor", "up", "down"}


def _command_of(args: tuple[str, ...]) -> str | None:
    from netra_rm.cli.argv import hoist_global_options

    line = hoist_global_options(list(args))
    return line.command[0] if line.command else None


def run_in_process(args: list[str], env: Mapping[str, str], *, cwd: str, input: str | None = None) -> Result:
    """``netra-rm ARGS`` in this process, as a real run would see it: its own environment,
    working directory, stdin and captured stdout/stderr, and everything it changes in the
    process (signal handlers, what discovery said already) put back afterwards. Much
    cheaper than a process start, for the many tests about what a command decides."""
    import io
    import signal

    from netra_rm.cli import main
    from netra_rm.services.compose import discovery

    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    said = set(discovery._said)
    out, err = io.StringIO(), io.StringIO()
    import logging

    # a real process has no logging set up: warnings reach stderr through logging's last
    # resort (pytest's own capture handlers would take them here instead)
    to_stderr = logging.StreamHandler(err)
    to_stderr.setLevel(logging.WARNING)
    logging.getLogger().addHandler(to_stderr)
    code: int = 0
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = ["netra-rm", *args]
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
        try:
            main()
        except SystemExit as exc:
            if isinstance(exc.code, int) or exc.code is None:
                code = exc.code or 0
            else:
                err.write(f"{exc.code}\n")
                code = 1
    finally:
        logging.getLogger().removeHandler(to_stderr)
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        discovery._said.clear()
        discovery._said.update(said)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(home: Path, ledger_path: Path):
    """Run ``netra-rm`` with NETRA_RM_LEDGER in tmp_path: in-process, or as a real
    process for the commands in :data:`PROCESS_COMMANDS` (and with ``process=True``)."""

    def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60,
            input: str | None = None, process: bool = False) -> Result:
        full_env = {**os.environ, "NETRA_RM_LEDGER": str(ledger_path), **(env or {})}
        if not process and os.environ.get("NETRA_RM_TEST_PROCESSES") != "1" \
                and _command_of(args) not in PROCESS_COMMANDS:
            return run_in_process(list(args), full_env, cwd=str(home), input=input)
        proc = subprocess.run([*_entry_point(), *args], capture_output=True, text=True, env=full_env,
                              timeout=timeout, input=input, cwd=str(home))
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def monitor_until_services(home: Path, ledger_path: Path):
    """Run ``netra-rm [ARGS] monitor --json`` with services checked every second and
    return the first sample's service rows once a round has landed (the rounds run beside
    the samples, so how many samples that takes depends on the machine's load), with the
    lines read and the monitor's stderr."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], list[str], str]:
        proc = subprocess.Popen([*_entry_point(), *args, "monitor", "--json", "--interval", "0.5", "--count", "240",
                                 "--services-interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=str(home),
                                env={**os.environ, "NETRA_RM_LEDGER": str(ledger_path), **(env or {})})
        assert proc.stdout is not None
        lines: list[str] = []
        rows: list[dict[str, Any]] = []
        try:
            for line in proc.stdout:  # ends by itself after 240 samples (2 minutes) at the latest
                lines.append(line)
                rows = json.loads(line)["services"]
                if rows:
                    break
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        return rows, lines, err

    return run


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a YAML configuration file and return its path."""

    def write(text: str, name: str = "netra-rm.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


SMALL_CONFIG = """
layers:
  tiny:
    services: []
    pool: {memory_mb: 300, cpu_percent: 30, instances: 3}
limits:
  max_memory_mb: 100000
  max_cpu_percent: 100
  max_parallel_instances: 1000
machine:
  check_memory: false
"""


@pytest.fixture
def small_config(write_config) -> Path:
    """The default layers plus ``tiny`` (300 MB, 30%, 3 instances), generous global caps."""
    return write_config(SMALL_CONFIG)
