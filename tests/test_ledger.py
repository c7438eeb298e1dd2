"""The JSON ledger: atomic writes, permissions, symlinks, versions, corruption, records
validated as they are read, a bounded lock wait, and a shared directory that another
local user cannot turn against us."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netra_rm.errors import LedgerBusyError, LedgerError, UnsafePathError
from netra_rm.ledger import EVERYTHING, SCHEMA_VERSION, Scope, open_ledger
from netra_rm.ledger.file import FileLedger, lock_holder
from netra_rm.records import Allocation, Owner


def allocation(i: int) -> Allocation:
    return Allocation(id=f"{i:012x}", layer="fast_feedback", category="c", memory_mb=1, cpu_units=1000,
                      dedicated=False, requires=("redis",), created_at=1.0, expires_at=2e9,
                      owner=Owner(host="h", user="u", pid=None), fencing_token=i,
                      charges=("layer:fast_feedback", "caps"), slots={"layer:fast_feedback": i},
                      slot_key="layer:fast_feedback")


def add(ledger: FileLedger, *allocations: Allocation) -> None:
    with ledger.transaction(EVERYTHING) as txn:
        for a in allocations:
            txn.grant(a)


def test_missing_ledger_reads_empty_and_is_created_0600(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "sub" / "ledger.json")
    assert ledger.read().allocations == []
    add(ledger, allocation(1))
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ledger.path.parent).st_mode) == 0o700
    data = json.loads(ledger.path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["allocations"][0]["id"] == allocation(1).id
    assert ledger.lock_path.exists()


def test_round_trip_keeps_every_field_and_the_usage_per_key(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.json")
    add(ledger, allocation(3), allocation(4))
    snapshot = ledger.read()
    assert snapshot.known[allocation(3).id] == allocation(3)
    assert snapshot.usage["layer:fast_feedback"].instances == 2 and "caps" not in snapshot.taken
    assert snapshot.taken["layer:fast_feedback"] == {3, 4}


def test_unchanged_transaction_does_not_rewrite(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.json")
    add(ledger, allocation(1))
    before = os.stat(ledger.path).st_ino
    with ledger.transaction(EVERYTHING):
        pass
    assert os.stat(ledger.path).st_ino == before


def test_lock_file_is_never_deleted_and_no_temp_file_is_left(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.json")
    for i in range(3):
        add(ledger, allocation(i))
    assert ledger.lock_path.exists()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"allocations": []}', b"",
                                     b'{"schema_version": 1, "allocations": [{"id": 1}]}'])
def test_corrupt_ledger_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    ledger = FileLedger(path)
    with pytest.raises(LedgerError) as info:
        add(ledger, allocation(1))
    assert str(path) in str(info.value) and "corrupt" in str(info.value)
    assert any("cleanup --force" in step for step in info.value.remediation)
    assert path.read_bytes() == content


GOOD = allocation(7).to_dict()


@pytest.mark.parametrize("field, value", [
    ("memory_mb", -5), ("memory_mb", "lots"), ("memory_mb", 1e309), ("cpu_percent", float("nan")),
    ("cpu_percent", -1), ("cpu_percent", "x"), ("expires_at", float("inf")), ("expires_at", None),
    ("created_at", "yesterday"), ("fencing_token", 1e309), ("fencing_token", -1), ("id", "../../etc/passwd"),
    ("id", "/tmp/x"), ("id", 7), ("owner", "me"), ("owner", {"host": 5}), ("slots", [1]), ("slots", {"k": -1}),
    ("charges", "caps"), ("requires", "redis"), ("dedicated", "yes"), ("lease_expires_at", float("nan")),
    ("priority", 10**9),
])
def test_every_record_is_checked_when_read_and_a_bad_one_is_corrupt_not_a_crash(tmp_path: Path, field: str,
                                                                               value: object) -> None:
    record = dict(GOOD)
    if value is None:
        record.pop(field)
    else:
        record[field] = value
    path = tmp_path / "ledger.json"
    raw = json.dumps({"schema_version": SCHEMA_VERSION, "fencing_counter": 9, "journal_seq": 0,
                      "allocations": [record], "waiters": [], "pools": []})
    path.write_text(raw)
    with pytest.raises(LedgerError) as info:
        FileLedger(path).read()
    text = str(info.value)
    assert "corrupt" in text and str(path) in text and "record 1" in text, text
    assert path.read_text() == raw


@pytest.mark.parametrize("top", [{"fencing_counter": 1e309}, {"fencing_counter": "x"}, {"journal_seq": -1},
                                 {"waiters": [{"id": "../../x"}]}, {"waiters": "x"}, {"pools": [{"key": 1}]}])
def test_bad_counters_waiters_and_pools_are_corrupt_too(tmp_path: Path, top: dict) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "allocations": [], **top}))
    with pytest.raises(LedgerError, match="corrupt"):
        FileLedger(path).read()


def test_every_command_says_corrupt_with_exit_5_never_unexpected(cli, ledger_path: Path) -> None:
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    ledger_path.write_text(json.dumps({"schema_version": 1, "allocations": [dict(GOOD, memory_mb="lots")]}))
    for args in (["status"], ["allocate", "--layer", "fast_feedback", "--category", "c"], ["verify"],
                 ["release", "000000000007"], ["cleanup"], ["history"]):
        result = cli(*args)
        assert result.code == 5, (args, result.stderr)
        assert "corrupt" in result.stderr and "unexpected" not in result.stderr and "Traceback" not in result.stderr


def test_a_schema_1_ledger_is_upgraded_as_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    old = {"id": "00000000000a", "layer": "tiny", "category": "c", "memory_mb": 10, "cpu_percent": 1.5,
           "dedicated": False, "requires": [], "created_at": 1.0, "expires_at": 2e9, "slot": 2, "fencing_token": 4,
           "owner": {"host": "h", "user": "u", "pid": None, "start": None}, "pools": ["db"]}
    path.write_text(json.dumps({"schema_version": 1, "fencing_counter": 4, "journal_seq": 3, "allocations": [old],
                                "waiters": []}))
    snapshot = FileLedger(path).read()
    a = snapshot.known["00000000000a"]
    assert a.charges == ("layer:tiny", "caps", "pool:db") and a.slot == 2 and a.slots["pool:db"] == 0
    assert snapshot.usage["caps"].memory_mb == 10 and snapshot.counter == 4 and snapshot.journal_seq == 3


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "allocations": []}))
    with pytest.raises(LedgerError, match="newer netra-rm"):
        FileLedger(path).read()


def test_symlink_at_the_ledger_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"schema_version": 1, "allocations": []}))
    link = tmp_path / "ledger.json"
    link.symlink_to(target)
    with pytest.raises(LedgerError, match="symbolic link"):
        add(FileLedger(link), allocation(1))
    assert json.loads(target.read_text())["allocations"] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"schema_version": 1, "allocations": []}))
    path.chmod(0)
    with pytest.raises(LedgerError, match="cannot read"):
        FileLedger(path).read()


def test_open_ledger_accepts_paths_and_file_urls(tmp_path: Path) -> None:
    assert open_ledger(str(tmp_path / "a.json")).location == str(tmp_path / "a.json")
    assert open_ledger(f"file://{tmp_path}/b.json").location == str(tmp_path / "b.json")
    assert open_ledger(None, env={"NETRA_RM_LEDGER": str(tmp_path / "c.json")}).location == str(tmp_path / "c.json")
    default = open_ledger(None, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert default.location == str(tmp_path / "state" / "netra-rm" / "ledger.json")


# -- the lock wait is bounded -----------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def stuck_holder(ledger_path: Path):
    ledger_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = ledger_path.with_name("ledger.json.lock")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.mark.parametrize("args", [["allocate", "--layer", "fast_feedback", "--category", "c"],
                                  ["release", "000000000001"], ["verify"], ["history"], ["cleanup"]])
def test_a_stuck_lock_holder_makes_every_command_exit_5_naming_it(cli, stuck_holder, args: list[str]) -> None:
    began = time.monotonic()
    result = cli(*args, env={"NETRA_RM_LOCK_TIMEOUT": "1"})
    took = time.monotonic() - began
    assert result.code == 5, result.stderr
    assert f"locked by process {stuck_holder.pid}" in result.stderr and "gave up after waiting 1s" in result.stderr
    assert f"kill {stuck_holder.pid}" in result.stderr and "Traceback" not in result.stderr
    assert took < 10


def test_status_reads_without_the_lock(cli, stuck_holder) -> None:
    result = cli("status", "--json", env={"NETRA_RM_LOCK_TIMEOUT": "1"})
    assert result.code == 0, result.stderr


def test_timeout_bounds_the_lock_wait_too(cli, stuck_holder) -> None:
    began = time.monotonic()
    result = cli("allocate", "--layer", "fast_feedback", "--category", "c", "--wait", "--timeout", "1")
    assert result.code == 5 and "locked by process" in result.stderr
    assert time.monotonic() - began < 8


def test_a_stopped_lock_holder_is_named_too(ledger_path: Path, stuck_holder) -> None:
    import signal

    os.kill(stuck_holder.pid, signal.SIGSTOP)
    try:
        ledger = FileLedger(ledger_path, lock_timeout=0.3)
        with pytest.raises(LedgerBusyError) as info:
            with ledger.transaction(EVERYTHING):
                pass
        assert str(stuck_holder.pid) in str(info.value)
        assert lock_holder(ledger.lock_path)[0] == stuck_holder.pid
    finally:
        os.kill(stuck_holder.pid, signal.SIGCONT)


def test_a_lock_freed_during_the_wait_is_taken(ledger_path: Path, stuck_holder) -> None:
    ledger = FileLedger(ledger_path, lock_timeout=20)
    stuck_holder.stdin.close()
    with ledger.transaction(Scope()) as txn:
        assert txn.allocations() == []


# -- identifiers are never paths ----------------------------------------------------------------------

def test_a_planted_waiter_whose_id_is_a_path_deletes_nothing(cli, ledger_path: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    ledger_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for bad in (str(victim), "../../victim.txt"):
        waiter = {"id": bad, "layer": "fast_feedback", "category": "c", "memory_mb": 1, "cpu_percent": 1,
                  "dedicated": False, "requires": [], "duration_minutes": 1, "since": 1, "fence": 0,
                  "owner": {"host": os.uname().nodename, "user": "u", "pid": 999999999, "start": "x"}}
        ledger_path.write_text(json.dumps({"schema_version": 1, "allocations": [], "waiters": [waiter]}))
        result = cli("status")
        assert result.code == 5 and "corrupt" in result.stderr
        assert victim.read_text() == "keep me"


# -- a shared directory: another user's files are refused ---------------------------------------------

def test_a_ledger_planted_by_another_user_is_refused(cli, other_user, shared_dir: Path) -> None:
    target = shared_dir / "ledger.json"
    other_user.sh("umask 000; echo '{\"schema_version\": 1, \"allocations\": []}' > \"$1\"", str(target))
    result = cli("--ledger", str(target), "status")
    assert result.code == 5
    assert f"{target} is not yours (owned by {other_user.name}" in result.stderr


def test_a_lock_file_or_journal_planted_by_another_user_is_refused(cli, other_user, shared_dir: Path) -> None:
    target = shared_dir / "ledger.json"
    for planted in ("ledger.json.lock", "ledger.json.journal"):
        for name in ("ledger.json", "ledger.json.lock", "ledger.json.journal"):
            (shared_dir / name).unlink(missing_ok=True)
        other_user.sh('umask 000; touch "$1"', str(shared_dir / planted))
        result = cli("--ledger", str(target), "allocate", "--layer", "fast_feedback", "--category", "c")
        assert result.code == 5, result.stderr
        assert f"{shared_dir / planted} is not yours" in result.stderr


def test_a_predictable_temp_file_cannot_be_taken_over(cli, other_user, shared_dir: Path) -> None:
    """Another user pre-creates every name the old scheme would use; the write still goes
    through a fresh file of ours, and the ledger stays ours."""
    target = shared_dir / "ledger.json"
    other_user.sh('umask 000; i=1; while [ $i -lt 4096 ]; do : > "$1/.ledger.json.$i.tmp"; i=$((i+1)); done',
                  str(shared_dir))
    result = cli("--ledger", str(target), "allocate", "--layer", "fast_feedback", "--category", "c")
    assert result.code == 0, result.stderr
    assert target.stat().st_uid == os.geteuid() and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_wait_directory_planted_by_another_user_is_refused(other_user, shared_dir: Path) -> None:
    target = shared_dir / "ledger.json"
    other_user.sh('umask 000; mkdir "$1"', str(shared_dir / "ledger.json.wait"))
    with pytest.raises(UnsafePathError, match=f"owned by {other_user.name}"):
        FileLedger(target).waiter_channel("0123456789ab")


def test_a_world_writable_directory_without_the_sticky_bit_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(UnsafePathError, match="sticky bit"):
        FileLedger(loose / "ledger.json").read()


def test_the_readmes_recovery_keeps_fencing_tokens_growing(cli, ledger_path: Path) -> None:
    """`mv ledger.json ledger.json.bad; netra-rm cleanup --force` starts a fresh ledger
    whose tokens are above any the old one handed out (they start from the clock)."""
    old = [int(cli("allocate", "--layer", "fast_feedback", "--category", "c", "--json").json()["fencing_token"])
           for _ in range(3)]
    ledger_path.rename(ledger_path.with_name("ledger.json.bad"))
    assert cli("cleanup", "--force").code == 0
    new = int(cli("allocate", "--layer", "fast_feedback", "--category", "c", "--json").json()["fencing_token"])
    assert new > max(old)
    ledger_path.write_text("{broken")  # a ledger nobody can read is never overwritten, even by --force
    forced = cli("cleanup", "--force")
    assert forced.code == 5 and "mv " in forced.stderr and ledger_path.read_text() == "{broken"
