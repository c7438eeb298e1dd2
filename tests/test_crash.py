"""Crash safety: processes SIGKILLed at any instant, a full disk, a read-only directory.

After every blow the ledger parses, `netra-rm verify` finds the journal and the ledger
in agreement with the pools never over-subscribed, nothing a live process holds is lost,
and what the dead held is reclaimed by the next transaction.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _entry_point

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("workers") / "storm_worker.py"

STORM_CONFIG = """
layers:
  storm:
    services: []
    pool: {memory_mb: 400, cpu_percent: 40, instances: 4}
limits: {max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}
machine: {check_memory: false}
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETRA_RM_", "MAX_"))}
    env.update({"PYTHONPATH": str(ROOT), "NETRA_RM_CONFIG": str(tmp_path / "storm.yaml"),
                "NETRA_RM_LEDGER": str(tmp_path / "ledger" / "ledger.json"), **extra})
    return env


def _netra(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_entry_point(), *args], capture_output=True, text=True, env=env, timeout=60, **kwargs)


def _engine(tmp_path: Path):
    from netra_rm.core.engine import Engine

    return Engine.from_options(config_path=str(tmp_path / "storm.yaml"),
                               ledger=str(tmp_path / "ledger" / "ledger.json"), env={})


def _spawn(env: dict[str, str], tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "storm.yaml"),
                             str(tmp_path / "ledger" / "ledger.json"), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _alive(pid: int) -> bool:
    from netra_rm.core import liveness

    return liveness.start_token(pid) is not None and liveness.is_alive(pid, None)


def test_kill_storm(tmp_path: Path) -> None:
    """Rounds of workers allocating, waiting, releasing and reclaiming, killed at random."""
    (tmp_path / "storm.yaml").write_text(STORM_CONFIG)
    # a small journal, so rotations happen in the storm too
    env = _env(tmp_path, NETRA_RM_JOURNAL_MAX_BYTES="40000")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill storm seed {seed}")
    ledger = tmp_path / "ledger" / "ledger.json"

    survivor = _spawn(env, tmp_path, "hold")
    kept = survivor.stdout.readline().strip()
    assert kept
    rounds, dead_pids = 8, set()
    try:
        for round_no in range(rounds):
            # an allocation whose owner is already dead: the workers race to reclaim it
            orphan = _spawn(env, tmp_path, "orphan")
            orphan.communicate(timeout=60)
            dead_pids.add(orphan.pid)
            workers = [_spawn(env, tmp_path, "wait" if i % 3 == 0 else "loop") for i in range(9)]
            for w in workers:
                assert w.stdout.readline().strip() == "started"
            victims = workers[:]
            rng.shuffle(victims)
            for w in victims:
                # random moments: spin a random number of ledger reads before each kill
                for _ in range(rng.randrange(0, 6)):
                    _engine(tmp_path).ledger.read()
                w.send_signal(signal.SIGKILL)
            for w in workers:
                w.wait(timeout=60)
                dead_pids.add(w.pid)

            # the ledger parses, and the journal explains it: verify reads, never reclaims
            data = json.loads(ledger.read_bytes())
            assert data["schema_version"] == 2
            check = _netra(env, "verify", "--json")
            assert check.returncode == 0, f"round {round_no} (seed {seed}): {check.stdout}{check.stderr}"
            report = json.loads(check.stdout)
            assert report["clean"] is True
            print(f"round {round_no}: {report['events_checked']} events, notes: {report['notes']}")
            # the next transaction drops what the dead held, and nothing of the living
            left = _engine(tmp_path).active_allocations()
            assert [a.id for a in left] == [kept], f"round {round_no} (seed {seed})"
            assert not [w for w in _engine(tmp_path).queue() if w.owner.pid in dead_pids]
            after = _netra(env, "verify", "--json")
            assert after.returncode == 0, after.stdout + after.stderr
    finally:
        survivor.stdin.close()
        survivor.wait(timeout=60)
    journal = ledger.with_name("ledger.json.journal")
    assert journal.with_name("ledger.json.journal.1").exists(), "the storm should have rotated the journal"
    final = _netra(env, "verify", "--json")
    assert final.returncode == 0
    assert json.loads(final.stdout)["events_checked"] > 0


KILL_AT = """
import os, signal, sys
from netra_rm.core.engine import Engine
import netra_rm.ledger.file as file_mod
import netra_rm.ledger.journal as journal_mod

where = sys.argv[3]
if where == "before-replace":
    real = os.replace
    def dying_replace(src, dst):
        if str(dst).endswith("ledger.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    file_mod.os.replace = dying_replace
elif where == "torn-journal":
    def torn(fd, payload):
        os.write(fd, payload[: len(payload) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    journal_mod._write_all = torn
engine = Engine.from_options(config_path=sys.argv[1], ledger=sys.argv[2], env={})
request = engine.resolve_request("storm", "dying", memory_mb=100, cpu_percent=10)
allocation = engine.allocate(request, engine.owner(None))
"""


@pytest.mark.parametrize("where", ["before-replace", "torn-journal"])
def test_killed_between_journal_and_ledger(tmp_path: Path, where: str) -> None:
    """SIGKILL after the journal append (or in the middle of it) but before the ledger
    replace: the ledger keeps its old state, and verify ignores the aborted lines, now
    and after later transactions reuse their sequence numbers."""
    (tmp_path / "storm.yaml").write_text(STORM_CONFIG)
    env = _env(tmp_path)
    first = _netra(env, "allocate", "--layer", "storm", "--category", "before", "--memory-mb", "100")
    assert first.returncode == 0, first.stderr
    ledger = tmp_path / "ledger" / "ledger.json"
    before = ledger.read_bytes()
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "storm.yaml"), str(ledger), where],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ledger.read_bytes() == before
    journal = ledger.with_name("ledger.json.journal").read_bytes()
    assert b'"category":"dying"' in journal or where == "torn-journal"
    check = _netra(env, "verify", "--json")
    assert check.returncode == 0, check.stdout
    assert json.loads(check.stdout)["notes"], "the skipped lines are mentioned"
    # later transactions reuse the aborted numbers; the history stays consistent
    second = _netra(env, "allocate", "--layer", "storm", "--category", "after", "--memory-mb", "100")
    assert second.returncode == 0
    assert _netra(env, "release", first.stdout.strip()).returncode == 0
    check = _netra(env, "verify", "--json")
    assert check.returncode == 0, check.stdout
    events = json.loads(_netra(env, "history", "--json").stdout)["events"]
    assert [e["category"] for e in events] == ["before", "after", "before"]
    assert [e["seq"] for e in events] == [1, 2, 3]


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("room", ["none", "partial"])
def test_full_disk_exits_5_and_leaves_everything_unchanged(tmp_path: Path, room: str) -> None:
    """RLIMIT_FSIZE makes writes fail as a full disk does: at once ("none"), or after part
    of the journal lines went out ("partial": they are cut back)."""
    (tmp_path / "storm.yaml").write_text(STORM_CONFIG)
    env = _env(tmp_path)
    assert _netra(env, "allocate", "--layer", "storm", "--category", "a", "--memory-mb", "100").returncode == 0
    directory = tmp_path / "ledger"
    before = _snapshot(directory)
    limit = 0 if room == "none" else len(before["ledger.json.journal"]) + 50
    for args in (["allocate", "--layer", "storm", "--category", "b", "--memory-mb", "100"],
                 ["cleanup", "--force"]):
        proc = subprocess.run([*_entry_point(), *args], capture_output=True, text=True, env=env, timeout=60,
                              preexec_fn=_limit_file_size(limit))
        assert proc.returncode == 5, proc.stderr
        assert proc.stdout == ""
        assert "File too large" in proc.stderr and "unchanged" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert _snapshot(directory) == before
    assert _netra(env, "verify").returncode == 0


def _make_read_only(directory: Path) -> list[str] | None:
    """Make ``directory`` read-only (for root too: chattr +i); the command that undoes it,
    or None when it cannot be done here."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        return ["chmod", "0700", str(directory)]
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0:
        return ["chattr", "-i", str(directory)]
    return None


def test_read_only_directory_exits_5_and_leaves_everything_unchanged(tmp_path: Path) -> None:
    """The journal file is still writable, the directory is not: the journal lines are
    cut back when the ledger cannot be replaced."""
    (tmp_path / "storm.yaml").write_text(STORM_CONFIG)
    env = _env(tmp_path)
    assert _netra(env, "allocate", "--layer", "storm", "--category", "a", "--memory-mb", "100").returncode == 0
    directory = tmp_path / "ledger"
    before = _snapshot(directory)
    unlock = _make_read_only(directory)
    if unlock is None:
        pytest.skip("cannot make a directory read-only for root here (no chattr)")
    try:
        proc = _netra(env, "allocate", "--layer", "storm", "--category", "b", "--memory-mb", "100")
        assert proc.returncode == 5, proc.stderr
        assert "cannot write the ledger" in proc.stderr and "unchanged" in proc.stderr
        assert _snapshot(directory) == before
    finally:
        subprocess.run(unlock, check=True)
    assert _netra(env, "verify").returncode == 0


def test_dead_owner_reclaimed_and_journaled(tmp_path: Path) -> None:
    """A process that dies holding an allocation: the next transaction reclaims it, and
    the journal says so."""
    (tmp_path / "storm.yaml").write_text(STORM_CONFIG)
    env = _env(tmp_path)
    holder = _spawn(env, tmp_path, "hold")
    ident = holder.stdout.readline().strip()
    holder.kill()
    holder.wait(timeout=60)
    assert not _alive(holder.pid)
    assert _engine(tmp_path).active_allocations() == []
    events = json.loads(_netra(env, "history", "--json").stdout)["events"]
    assert [(e["event"], e["id"]) for e in events] == [("grant", ident), ("reclaim", ident)]
    assert _netra(env, "verify").returncode == 0


def test_release_of_a_dead_owners_allocation_is_journaled_as_release(tmp_path: Path) -> None:
    """`run` releases after CMD ended (its owner is dead by then): a release, not a reclaim."""
    (tmp_path / "storm.yaml").write_text(STORM_CONFIG)
    env = _env(tmp_path)
    proc = _netra(env, "run", "--layer", "storm", "--category", "r", "--memory-mb", "100", "--", "true")
    assert proc.returncode == 0, proc.stderr
    events = json.loads(_netra(env, "history", "--json").stdout)["events"]
    assert [e["event"] for e in events] == ["grant", "release"]
    assert proc.stderr == ""

