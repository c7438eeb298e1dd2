"""Sixteen real processes share one small pool, on each backend. Replaying their record
proves the pool was never over-subscribed and nothing was lost; the same run without the
lock must fail.

On Redis and PostgreSQL the workers pretend to be on four hosts (distinct
NETRA_RM_HOST_ID) and the pool is ``global``: counted across all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backends import Backend
from conftest import SMALL_CONFIG

WORKER = Path(__file__).with_name("workers") / "alloc_worker.py"
PROCESSES = 16
ITERATIONS = 15
INSTANCES = 3  # the `tiny` pool: 300 MB, 30%, 3 instances; each worker asks 100 MB, 10%
HOSTS = 4

GLOBAL_CONFIG = SMALL_CONFIG.replace("pool: {memory_mb: 300, cpu_percent: 30, instances: 3}",
                                     "pool: {memory_mb: 300, cpu_percent: 30, instances: 3, scope: global}")


def run_workers(tmp_path: Path, ledger: Backend, *extra: str) -> tuple[list[dict], dict, list[str]]:
    """Run the workers together; their events, the final ledger, and how any of them died."""
    config = tmp_path / "netra-rm.yaml"
    config.write_text(GLOBAL_CONFIG if ledger.shared else SMALL_CONFIG)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    procs = []
    for i in range(PROCESSES):
        log = tmp_path / f"worker{i}.log"
        hosts = ["--host-id", f"ci-runner-{i % HOSTS}"] if ledger.shared else []
        procs.append((subprocess.Popen([sys.executable, str(WORKER), str(config), ledger.location, str(log),
                                        str(ITERATIONS), *extra, *hosts], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), log))
    for proc, _ in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc, _ in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    events, crashes = [], []
    for proc, log in procs:
        _, err = proc.communicate(timeout=240)
        if proc.returncode != 0:
            crashes.append(f"worker died with {proc.returncode}: {err.strip().splitlines()[-1:]}")
        elif log.exists():
            events += [json.loads(line) for line in log.read_text().splitlines()]
    from netra_rm.errors import LedgerError

    try:
        final = ledger.open(tmp_path / "state").read()
    except LedgerError as exc:  # the workers' own ledger refused: its fencing saw the damage
        crashes.append(f"the ledger is refused: {exc.message}")
        return events, {"fencing_counter": 0, "allocations": []}, crashes
    return events, {"fencing_counter": final.counter, "allocations": final.allocations}, crashes


def replay(events: list[dict], final: dict) -> list[str]:
    """Everything wrong with the record: over-subscription, lost allocations, lost updates."""
    problems = []
    held, peak = set(), 0
    for e in sorted(events, key=lambda e: (e["t"], e["event"] != "release")):
        if e["event"] == "grant":
            if e["id"] in held:
                problems.append(f"{e['id']} granted twice")
            held.add(e["id"])
            peak = max(peak, len(held))
        elif e["event"] == "release":
            held.discard(e["id"])
        elif e["event"] == "lost":
            problems.append(f"{e['id']} vanished from the ledger before its release")
        elif e["event"] == "stuck":
            problems.append("a worker found the pool full of allocations nobody holds")
    if peak > INSTANCES:
        problems.append(f"{peak} allocations held at once in a pool of {INSTANCES}")
    grants = [e for e in events if e["event"] == "grant"]
    tokens = [e["token"] for e in grants]
    if len(set(tokens)) != len(tokens):
        problems.append("a fencing token was handed out twice")
    if tokens and final["fencing_counter"] < max(tokens):
        problems.append(f"fencing counter {final['fencing_counter']} went back below {max(tokens)} (lost updates)")
    if final["allocations"]:
        problems.append(f"{len(final['allocations'])} allocation(s) left in the ledger")
    return problems


def test_sixteen_processes_never_oversubscribe_and_lose_nothing(tmp_path: Path, backend: Backend) -> None:
    events, final, crashes = run_workers(tmp_path, backend)
    assert crashes == []
    assert sum(e["event"] == "grant" for e in events) == PROCESSES * ITERATIONS
    assert replay(events, final) == []


def test_the_journal_of_the_run_verifies_clean(tmp_path: Path, server_backend: Backend) -> None:
    """The server's own journal tells the same story: `verify` replays it cleanly."""
    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine
    from netra_rm.core.verify import verify_ledger

    events, _, crashes = run_workers(tmp_path, server_backend)
    assert crashes == []
    engine = Engine(load_config(tmp_path / "netra-rm.yaml", env={}), server_backend.open(tmp_path / "state"),
                    env={"NETRA_RM_HOST_ID": "auditor"})
    report = verify_ledger(engine)
    assert report.findings == ()
    assert report.events == 2 * PROCESSES * ITERATIONS + 1  # and the global pool's registration


def test_without_the_lock_the_replay_finds_the_damage(tmp_path: Path, backend: Backend) -> None:
    events, final, crashes = run_workers(tmp_path, backend, "--no-lock")
    problems = crashes + replay(events, final)
    if backend.kind == "postgresql":
        # usage moves by deltas there, so nothing is lost: the damage is over-subscription,
        # which the server's journal (in commit order) shows better than the workers' clocks
        from netra_rm.config import load_config
        from netra_rm.core.engine import Engine
        from netra_rm.core.verify import verify_ledger

        engine = Engine(load_config(tmp_path / "netra-rm.yaml", env={}), backend.open(tmp_path / "state"),
                        env={"NETRA_RM_HOST_ID": "auditor"})
        problems += [f.message for f in verify_ledger(engine).findings]
    print("\n".join(problems[:10]))
    assert problems != []
