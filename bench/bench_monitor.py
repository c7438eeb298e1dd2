"""How much CPU does the monitor cost? netra-rm's NDJSON monitor beside glances.

Runs both at a 1 s interval over the same window, measures each process's CPU time
(user + system, children included) over that window, after both have printed their first
sample so that start-up is not counted, and prints a table. Goal: under 1% of one core,
and at most a fifth of glances.

    python bench/bench_monitor.py                 # 60 s
    python bench/bench_monitor.py --seconds 10    # a quick run
    python bench/bench_monitor.py --check         # exit 1 when a goal is missed
    python bench/bench_monitor.py --services live # the seven services up and healthy

By default the services are those of the built-in configuration, on localhost ports
where (on a bench machine) nothing listens: the monitor finds them down and knocks on
their ports each round. ``--services live`` starts real servers for all seven first
(PostgreSQL, Redis, ClickHouse, HTTP and WebSocket stubs, from tests/servers.py) and
points the monitor at them, so each round really checks seven healthy services.

Until ``netra-rm monitor`` exists the "library" command runs ``run_monitor`` over a
sampler-only snapshot; ``--ours auto`` (the default) takes the CLI once
``python -m netra_rm monitor --help`` works.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

REPO = Path(__file__).resolve().parents[1]

#: What we measure once the CLI has its monitor command.
OURS_CLI_COMMAND = [sys.executable, "-m", "netra_rm", "monitor", "--json", "--interval", "{interval}"]

#: What we measure until then: the same loop and sampler, without the ledger or services.
OURS_LIBRARY_COMMAND = [
    sys.executable,
    "-c",
    "import sys\n"
    "from netra_rm.monitor.loop import run_monitor\n"
    "from netra_rm.monitor.snapshot import SnapshotSource\n"
    "run_monitor(SnapshotSource(), interval=float(sys.argv[1]), count=None, json_lines=True, out=sys.stdout)\n",
    "{interval}",
]

#: glances keeps sampling in this mode (``--stdout-json`` stops after one line).
GLANCES_ARGS = ["--stdout", "cpu.total,mem.percent", "-t", "{interval}"]


@dataclass
class Runner:
    """One monitor process, its output drained in a thread so it never blocks on a pipe."""

    name: str
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    lines: int = 0
    last_line: str = ""
    first_line: threading.Event = field(default_factory=threading.Event)
    stderr_tail: str = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, cwd=REPO
        )
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._drain_err, args=(self.proc.stderr,), daemon=True).start()

    def _drain(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines += 1
            self.last_line = line.rstrip("\n")
            self.first_line.set()

    def _drain_err(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.stderr_tail = (self.stderr_tail + line)[-2000:]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process and its children so far."""
        assert self.proc is not None
        try:
            process = psutil.Process(self.proc.pid)
            times = process.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in process.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                except psutil.Error:
                    continue
                total += child_times.user + child_times.system
            return total
        except psutil.Error:
            return float("nan")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def expand(command: list[str], interval: float) -> list[str]:
    return [part.replace("{interval}", f"{interval:g}") for part in command]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"  # glances prints through a block-buffered pipe otherwise
    env.pop("NETRA_RM_DEBUG", None)
    # Cache bytecode as an installed package has it: with PYTHONDONTWRITEBYTECODE set (as in
    # some containers) every lazily imported module would be compiled inside the window.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "netra-rm-bench-pycache")
    return env


def cli_has_monitor(env: dict[str, str]) -> bool:
    try:
        result = subprocess.run(
            [sys.executable, "-m", "netra_rm", "monitor", "--help"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def glances_command(*, install: bool) -> list[str] | None:
    if importlib.util.find_spec("glances") is None and install:
        print("glances is missing: pip install glances", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "glances"], check=False)
        importlib.invalidate_caches()
    if importlib.util.find_spec("glances") is not None:
        return [sys.executable, "-m", "glances", *GLANCES_ARGS]
    on_path = shutil.which("glances")
    return [on_path, *GLANCES_ARGS] if on_path else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured window (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval of both tools (default 1)")
    parser.add_argument("--ours", choices=("auto", "cli", "library"), default="auto",
                        help="measure the CLI, the library loop, or the CLI when it has `monitor` (default)")
    parser.add_argument("--no-glances", action="store_true", help="measure netra-rm alone")
    parser.add_argument("--no-install", action="store_true", help="do not pip install glances when missing")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--services", choices=("default", "live"), default="default",
                        help="the configured services as they are (default), or real servers for all seven")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        env = child_env()
        if args.services == "live":
            env.update(live_service_environment(stack))
        return measure(args, env)


def live_service_environment(stack: contextlib.ExitStack) -> dict[str, str]:
    """Start the seven services for real (stopped when ``stack`` closes); the variables
    that point the built-in configuration at them."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from servers import ServerStack, live_specs

    print("starting PostgreSQL, Redis, ClickHouse and the HTTP/WebSocket stubs ...", file=sys.stderr)
    servers = stack.enter_context(ServerStack())
    return {spec.url_env: spec.url for spec in live_specs(servers.servers).values() if spec.url_env}


def measure(args: argparse.Namespace, env: dict[str, str]) -> int:
    ours_kind = args.ours
    if ours_kind == "auto":
        ours_kind = "cli" if cli_has_monitor(env) else "library"
    ours_cmd = expand(OURS_CLI_COMMAND if ours_kind == "cli" else OURS_LIBRARY_COMMAND, args.interval)
    runners = [Runner(f"netra-rm ({ours_kind})", ours_cmd, env)]
    if not args.no_glances:
        glances = glances_command(install=not args.no_install)
        if glances is None:
            print("glances is not installed and could not be installed; measuring netra-rm alone", file=sys.stderr)
        else:
            runners.append(Runner("glances", expand(glances, args.interval), env))

    for runner in runners:
        runner.start()
    try:
        for runner in runners:  # start-up is not what we measure
            if not runner.first_line.wait(60) or not runner.alive():
                print(f"{runner.name} printed nothing within 60 s:\n{runner.stderr_tail}", file=sys.stderr)
                return 2
        start_cpu = [r.cpu_seconds() for r in runners]
        start_lines = [r.lines for r in runners]
        start = time.monotonic()
        print(f"measuring for {args.seconds:g} s at a {args.interval:g} s interval ...", file=sys.stderr)
        threading.Event().wait(args.seconds)
        wall = time.monotonic() - start
        end_cpu = [r.cpu_seconds() for r in runners]
        end_lines = [r.lines for r in runners]
        for runner in runners:
            if not runner.alive():
                print(f"{runner.name} ended during the run:\n{runner.stderr_tail}", file=sys.stderr)
                return 2
    finally:
        clean_exit = stop_all(runners)

    used = [end - begin for begin, end in zip(start_cpu, end_cpu)]
    glances_used = used[1] if len(used) > 1 else None
    print()
    tick = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
    print(f"window {wall:.1f} s, interval {args.interval:g} s, {psutil.cpu_count()} cores, services "
          f"{'live (seven healthy)' if args.services == 'live' else 'as configured'}; "
          f"CPU time is counted in {tick:g} s ticks")
    header = f"{'tool':<20} {'CPU seconds':>12} {'% of one core':>14} {'ratio':>7} {'lines':>6}"
    print(header)
    print("-" * len(header))
    for runner, cpu, lines0, lines1 in zip(runners, used, start_lines, end_lines):
        ratio = f"{cpu / glances_used:.3f}" if glances_used else "-"
        print(f"{runner.name:<20} {cpu:>12.3f} {cpu / wall * 100:>13.2f}% {ratio:>7} {lines1 - lines0:>6}")
    print()
    print(services_seen(runners[0].last_line))
    ours_percent = used[0] / wall * 100
    goals = [(f"netra-rm under 1% of one core ({ours_percent:.2f}%)", ours_percent < 1.0)]
    if glances_used:
        goals.append((f"netra-rm at most a fifth of glances (ratio {used[0] / glances_used:.3f})",
                       used[0] <= glances_used / 5))
    goals.append((f"netra-rm ended cleanly on SIGINT (exit {clean_exit})", clean_exit == 0))
    for text, ok in goals:
        print(f"{'met   ' if ok else 'MISSED'}  {text}")
    return 1 if args.check and not all(ok for _, ok in goals) else 0


def services_seen(line: str) -> str:
    """What our last NDJSON line says of the services, so the table says what was measured."""
    try:
        services = json.loads(line).get("services") or []
    except ValueError:
        return "netra-rm's last line is not JSON"
    healthy = sum(1 for s in services if s.get("status") == "healthy")
    return f"netra-rm's last sample: {healthy} of {len(services)} services healthy"


def stop_all(runners: list[Runner]) -> int | None:
    """Ctrl-C for ours (it must exit 0), terminate for the others; ours' exit code."""
    for i, runner in enumerate(runners):
        if runner.alive():
            assert runner.proc is not None
            runner.proc.send_signal(signal.SIGINT if i == 0 else signal.SIGTERM)
    codes: list[int | None] = []
    for runner in runners:
        assert runner.proc is not None
        try:
            codes.append(runner.proc.wait(10))
        except subprocess.TimeoutExpired:
            runner.proc.kill()
            codes.append(runner.proc.wait())
    return codes[0] if codes else None


if __name__ == "__main__":
    sys.exit(main())
