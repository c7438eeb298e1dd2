"""How long do service checks take? netra-rm beside peer tools run one after another.

Starts the real servers itself (PostgreSQL, Redis, ClickHouse, HTTP and WebSocket stubs,
and a silent server, from tests/servers.py), then times, in one run:

- ``check_services`` over the seven default services, all healthy (warm, median of N);
- the same in a fresh process, driver imports included (what a CLI call pays);
- the same with one service silent (accepts TCP, never answers) and with all silent;
- ``netra-rm status --json`` as a whole process, as a CI step pays it;
- the same checks done one after another from the shell by peer tools: ``pg_isready``,
  ``redis-cli ping`` and ``curl`` (ClickHouse ``/ping`` and ``SELECT 1``, the HTTP
  services; no shell tool checks the WebSocket, so the peers do six services of seven).

Usage: ``python bench/bench_status.py [--runs N] [--timeout S]``. To add a measurement,
write a function returning a list of seconds and add it to ``measurements()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from netra_rm.services import ServiceSpec, check_services

from servers import (
    CLICKHOUSE_PASSWORD,
    CLICKHOUSE_USER,
    PG_DATABASE,
    PG_USER,
    REDIS_PASSWORD,
    ServerStack,
    live_specs,
)

Specs = dict[str, ServiceSpec]


@dataclass(frozen=True)
class Measurement:
    """One row of the table: what was timed, and how to time it once."""

    label: str
    run: Callable[[], float | None]  # seconds for one run; None when it cannot run here
    runs: int


# --------------------------------------------------------------------------- netra-rm


def warm_up(specs: Specs) -> None:
    """One untimed call, so the warm figures do not include importing the drivers."""
    check_services(specs)


def time_check_services(specs: Specs, *, deadline: float = 5.0) -> float:
    """Wall time of one in-process ``check_services`` call."""
    started = time.perf_counter()
    results = check_services(specs, deadline=deadline)
    elapsed = time.perf_counter() - started
    unhealthy = [n for n, r in results.items() if r.status == "unhealthy" and r.reason != "timeout"]
    if unhealthy:
        raise RuntimeError(f"unexpected failures: {[(n, results[n].error) for n in unhealthy]}")
    return elapsed


_COLD_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from netra_rm.services import ServiceSpec, check_services
specs = {d["name"]: ServiceSpec(**{**d, "depends_on": tuple(d["depends_on"]),
                                   "expect_status": tuple(d["expect_status"])})
         for d in json.loads(sys.stdin.read())}
results = check_services(specs)
elapsed = time.perf_counter() - started
bad = [n for n, r in results.items() if not r.healthy]
print(json.dumps({"seconds": elapsed, "unhealthy": bad}))
"""


def time_cold_process(specs: Specs, *, include_startup: bool) -> float:
    """A fresh interpreter: import netra_rm.services and check once (drivers load here).

    With ``include_startup`` the whole process is timed, interpreter start included.
    """
    payload = json.dumps([dataclasses.asdict(spec) for spec in specs.values()])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _COLD_SCRIPT], input=payload, text=True,
                          capture_output=True, cwd=ROOT, check=True, timeout=60)
    wall = time.perf_counter() - started
    report = json.loads(done.stdout)
    if report["unhealthy"]:
        raise RuntimeError(f"unhealthy in the cold run: {report['unhealthy']}")
    return wall if include_startup else float(report["seconds"])


def time_cli_status(specs: Specs) -> float | None:
    """``netra-rm status --json`` as CI runs it: a new process, addresses from the environment.

    None when the command cannot report here (the row then says n/a).
    """
    script = Path(sys.executable).with_name("netra-rm")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "netra_rm"]
    with tempfile.TemporaryDirectory(prefix="netra-rm-bench-") as tmp:
        env = {**os.environ, "NETRA_RM_LEDGER": str(Path(tmp) / "ledger.json")}
        env.update({spec.url_env: spec.url for spec in specs.values() if spec.url_env})
        started = time.perf_counter()
        done = subprocess.run([*argv, "status", "--json"], capture_output=True, text=True,
                              env=env, cwd=tmp, timeout=60, check=False)
        elapsed = time.perf_counter() - started
    try:
        services = json.loads(done.stdout)["services"]
        services = services.get("services", services)
    except (ValueError, KeyError, AttributeError):
        return None
    unhealthy = [n for n, s in services.items() if s.get("status") != "healthy"]
    if done.returncode != 0 or unhealthy:
        raise RuntimeError(f"netra-rm status: exit {done.returncode}, unhealthy {unhealthy}")
    return elapsed


# --------------------------------------------------------------------------- peer tools


def peer_commands(stack: ServerStack, *, timeout: float,
                  silent: set[str] = frozenset()) -> list[list[str]] | None:  # type: ignore[assignment]
    """Shell commands checking the services one by one (None if a tool is missing).

    Six of the seven: no common shell tool checks a WebSocket (``curl`` after a 101 waits
    for its ``-m`` to run out), so the peers' figures leave the WebSocket out and flatter
    them. ClickHouse takes two: ``/ping`` and an authenticated ``SELECT 1``. A service
    named in ``silent`` is pointed at the silent server instead.
    """
    for tool in ("pg_isready", "redis-cli", "curl"):
        if not shutil.which(tool):
            return None
    silent_port = stack["silent"].port

    def port(name: str) -> int:
        return silent_port if name in silent else stack[name].port

    t = f"{timeout:g}"
    return [
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port("postgresql")), "-U", PG_USER,
         "-d", PG_DATABASE, "-t", str(max(1, round(timeout)))],
        # redis-cli < 7.2 has no timeout option: bound it as a shell script would
        [*(["timeout", t] if shutil.which("timeout") else []), "redis-cli", "-h", "127.0.0.1",
         "-p", str(port("redis")), "-a", REDIS_PASSWORD, "--no-auth-warning", "ping"],
        ["curl", "-fsS", "-o", "/dev/null", "-m", t, f"http://127.0.0.1:{port('clickhouse')}/ping"],
        ["curl", "-fsS", "-o", "/dev/null", "-m", t, "-H", f"X-ClickHouse-User: {CLICKHOUSE_USER}",
         "-H", f"X-ClickHouse-Key: {CLICKHOUSE_PASSWORD}",
         f"http://127.0.0.1:{port('clickhouse')}/?query=SELECT%201"],
        ["curl", "-fsS", "-o", "/dev/null", "-m", t, f"http://127.0.0.1:{port('auth')}/health"],
        ["curl", "-fsS", "-o", "/dev/null", "-m", t, f"http://127.0.0.1:{port('backend')}/health"],
        ["curl", "-fsS", "-o", "/dev/null", "-m", t, f"http://127.0.0.1:{port('frontend')}/"],
    ]


def time_peers(commands: list[list[str]] | None, *, expect_ok: bool) -> float | None:
    """Run the peer commands one after another, as a shell script would."""
    if commands is None:
        return None
    started = time.perf_counter()
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if expect_ok and done.returncode != 0:
            raise RuntimeError(f"peer check failed: {' '.join(argv[:3])} ...: "
                               f"{done.stdout.strip()} {done.stderr.strip()}")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the table


def measurements(stack: ServerStack, *, runs: int, timeout: float) -> list[Measurement]:
    """Every row of the table, in order. Add yours here."""
    healthy = live_specs(stack.servers)
    silent_url = stack["silent"].url
    one_silent = dict(healthy)
    one_silent["frontend"] = dataclasses.replace(healthy["frontend"], url=silent_url,
                                                 timeout=timeout, connect_timeout=timeout)
    schemes = {"postgresql": "postgresql://u:p@", "redis": "redis://", "clickhouse": "http://",
               "http": "http://", "websocket": "ws://"}
    all_silent = {n: dataclasses.replace(s, url=f"{schemes[s.kind]}127.0.0.1:{stack['silent'].port}/x",
                                         timeout=timeout, connect_timeout=timeout)
                  for n, s in healthy.items()}
    few = max(1, min(runs, 5))
    return [
        Measurement("check_services, 7 healthy (warm)", lambda: time_check_services(healthy), runs),
        Measurement("check_services, 7 healthy, fresh process (imports + check)",
                    lambda: time_cold_process(healthy, include_startup=False), few),
        Measurement("  same, whole `python -c` process", lambda: time_cold_process(
            healthy, include_startup=True), few),
        Measurement("`netra-rm status --json`, 7 healthy (whole process)",
                    lambda: time_cli_status(healthy), few),
        Measurement("peers one after another, 6 healthy (7 commands, no websocket)",
                    lambda: time_peers(peer_commands(stack, timeout=timeout), expect_ok=True), runs),
        Measurement(f"check_services, 1 silent (timeout {timeout:g} s)",
                    lambda: time_check_services(one_silent), few),
        Measurement(f"peers one after another, 1 silent (-t/-m {timeout:g} s)",
                    lambda: time_peers(peer_commands(stack, timeout=timeout, silent={"frontend"}),
                                       expect_ok=False), few),
        Measurement(f"check_services, all 7 silent (timeout {timeout:g} s)",
                    lambda: time_check_services(all_silent), 1),
        Measurement(f"peers one after another, 6 silent (-t/-m {timeout:g} s)",
                    lambda: time_peers(peer_commands(stack, timeout=timeout, silent=set(healthy)),
                                       expect_ok=False), 1),
    ]


def run_measurement(m: Measurement) -> list[float] | None:
    times: list[float] = []
    for _ in range(m.runs):
        seconds = m.run()
        if seconds is None:
            return None
        times.append(seconds)
    return times


def print_table(rows: list[tuple[str, int, list[float] | None]]) -> None:
    width = max(len(label) for label, _, _ in rows)
    print(f"{'measurement':<{width}}  {'runs':>4}  {'median ms':>10}  {'min ms':>8}  {'max ms':>8}")
    print("-" * (width + 38))
    for label, runs, times in rows:
        if times is None:
            print(f"{label:<{width}}  {runs:>4}  {'n/a (cannot run here)':>10}")
            continue
        ms = [t * 1000 for t in times]
        print(f"{label:<{width}}  {runs:>4}  {statistics.median(ms):>10.1f}  {min(ms):>8.1f}  "
              f"{max(ms):>8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per fast measurement")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="per-check timeout of the silent measurements, seconds")
    args = parser.parse_args(argv)
    print("starting PostgreSQL, Redis, ClickHouse and the stub servers ...", file=sys.stderr,
          flush=True)
    started = time.perf_counter()
    with ServerStack() as stack:
        print(f"servers up in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        warm_up(live_specs(stack.servers))
        rows = []
        for m in measurements(stack, runs=args.runs, timeout=args.timeout):
            rows.append((m.label, m.runs, run_measurement(m)))
        print_table(rows)
    for note in notes():
        print(note)
    return 0


def notes() -> list[str]:
    """Things on this machine that change the figures."""
    import importlib.util

    out = ["peers cover six services: no shell tool checks a WebSocket handshake."]
    if importlib.util.find_spec("trio") is not None:
        out.append("trio is installed here: httpcore imports it when present (~50 ms of the "
                   "fresh-process figures); netra-rm's dependencies do not need it.")
    return out


if __name__ == "__main__":
    sys.exit(main())
