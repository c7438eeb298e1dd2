"""The JSON ledger: atomic writes, permissions, symlinks, versions and corruption."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from netra_rm.core.model import Allocation, Owner
from netra_rm.errors import LedgerError
from netra_rm.ledger import SCHEMA_VERSION, open_ledger
from netra_rm.ledger.file import FileLedger


def allocation(i: int) -> Allocation:
    return Allocation(id=f"id{i}", layer="fast_feedback", category="c", memory_mb=1, cpu_percent=1.0,
                      dedicated=False, requires=("redis",), created_at=1.0, expires_at=2e9, slot=i,
                      owner=Owner(host="h", user="u", pid=None), fencing_token=i)


def test_missing_ledger_reads_empty_and_is_created_0600(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "sub" / "ledger.json")
    assert ledger.read().allocations == []
    with ledger.transaction() as state:
        state.add(allocation(1))
    mode = stat.S_IMODE(os.stat(ledger.path).st_mode)
    assert mode == 0o600
    data = json.loads(ledger.path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["allocations"][0]["id"] == "id1"
    assert ledger.lock_path.exists()


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.json")
    with ledger.transaction() as state:
        state.add(allocation(3))
    assert ledger.read().allocations == [allocation(3)]


def test_unchanged_transaction_does_not_rewrite(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.json")
    with ledger.transaction() as state:
        state.add(allocation(1))
    before = os.stat(ledger.path).st_ino
    with ledger.transaction():
        pass
    assert os.stat(ledger.path).st_ino == before


def test_lock_file_is_never_deleted(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "ledger.json")
    for _ in range(3):
        with ledger.transaction() as state:
            state.add(allocation(len(state.allocations)))
    assert ledger.lock_path.exists()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"allocations": []}', b"",
                                     b'{"schema_version": 1, "allocations": [{"id": 1}]}'])
def test_corrupt_ledger_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    ledger = FileLedger(path)
    with pytest.raises(LedgerError) as info:
        with ledger.transaction() as state:
            state.add(allocation(1))
    assert str(path) in str(info.value) and "corrupt" in str(info.value)
    assert any("cleanup --force" in step for step in info.value.remediation)
    assert path.read_bytes() == content


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
        with FileLedger(link).transaction() as state:
            state.add(allocation(1))
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
