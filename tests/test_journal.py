"""The journal and `verify` / `history`: what is written, how it rotates, what the
replay accepts and what it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netra_rm.config.model import Layer, Limits, Pool
from netra_rm.core.accounting import caps_capacity, pool_capacity
from netra_rm.core.verify import committed_history, keys_for_config, parse_lines, recent_events, verify

POOLS = {"tiny": Pool(memory_mb=300, cpu_percent=30, instances=3)}
LIMITS = Limits(max_memory_mb=1000, max_cpu_percent=100, max_parallel_instances=4)


class _Config:
    """Just what the replay asks of a configuration: its layers' scopes and its pools."""

    layers = {"tiny": Layer(name="tiny", services=(), pool=POOLS["tiny"], default_memory_mb=100,
                            default_cpu_percent=10)}
    pools: dict = {}


CURRENT = {"layer:tiny": pool_capacity(POOLS["tiny"]), "caps": caps_capacity(LIMITS)}
OWNER = {"host": "h", "user": "u", "pid": None, "start": None}


def event(seq: int, kind: str, ident: str, *, memory: int = 100, cpu: float = 10, token: int | None = None,
          slot: int = 0, layer: str = "tiny", dedicated: bool = False) -> bytes:
    record = {"seq": seq, "time": 1000.0 + seq, "event": kind, "id": ident, "layer": layer, "category": "c",
              "memory_mb": memory, "cpu_percent": cpu, "dedicated": dedicated, "slot": slot,
              "fencing_token": seq if token is None else token, "owner": OWNER}
    return json.dumps(record).encode()


def checkpoint(after: int, allocations: list[dict] | None = None, reason: str = "start") -> bytes:
    return json.dumps({"event": "checkpoint", "after": after, "time": 999.0, "reason": reason,
                       "fencing_counter": after, "allocations": allocations or []}).encode()


def ledger_record(ident: str, *, token: int, memory: int = 100, cpu: float = 10, slot: int = 0) -> dict:
    return {"id": ident, "layer": "tiny", "category": "c", "memory_mb": memory, "cpu_percent": cpu,
            "dedicated": False, "slot": slot, "fencing_token": token, "owner": OWNER}


def check(lines: list[bytes], ledger: list[dict], committed: int):
    return verify(lines, ledger_allocations=ledger, committed_seq=committed,
                  keys_of=keys_for_config(_Config(), shared=False), current=CURRENT.get)  # type: ignore[arg-type]


# -- the replay, as a pure function -------------------------------------------------------------

def test_a_clean_history() -> None:
    lines = [checkpoint(0), event(1, "grant", "a", slot=0), event(2, "grant", "b", slot=1),
             event(3, "release", "a"), event(4, "grant", "c", slot=0, token=3)]
    report = check(lines, [ledger_record("b", token=2, slot=1), ledger_record("c", token=3)], 4)
    assert report.clean, report.findings
    assert report.events == 4 and report.notes == ()


def test_pool_over_subscription_is_found() -> None:
    lines = [checkpoint(0)] + [event(i, "grant", f"a{i}", slot=i) for i in range(1, 5)]
    report = check(lines, [ledger_record(f"a{i}", token=i, slot=i) for i in range(1, 5)], 4)
    kinds = {(f.kind, f.id) for f in report.findings}
    assert ("over-subscribed", "a4") in kinds
    messages = " ".join(f.message for f in report.findings)
    assert "layer tiny memory: 400 of 300 MB" in messages and "instances: 4 of 3" in messages


def test_global_caps_dedicated_and_slots_are_checked() -> None:
    lines = [checkpoint(0), event(1, "grant", "a", memory=0, cpu=0, dedicated=True),
             event(2, "grant", "b", memory=0, cpu=0, slot=0)]
    report = check(lines, [ledger_record("a", token=1, memory=0, cpu=0), ledger_record("b", token=2, memory=0, cpu=0)],
                   2)
    messages = [f.message for f in report.findings]
    assert any("dedicated allocation shared the layer" in m for m in messages)
    assert any("slot 0 held twice" in m for m in messages)
    big = [checkpoint(0), event(1, "grant", "x", memory=900, cpu=0, layer="elsewhere"),
           event(2, "grant", "y", memory=200, cpu=0, layer="elsewhere2")]
    report = check(big, [], 2)
    assert any("global memory cap: 1100 of 1000 MB" in f.message for f in report.findings)
    assert any("not in the configuration" in n for n in report.notes)


def test_each_grant_is_judged_by_the_limits_it_was_admitted_under() -> None:
    """Recorded limits win over the configuration of now: a pool that grew later does not
    hide an over-subscription, and one that shrank later does not invent one."""
    def granted(seq: int, ident: str, *, instances: int, caps: int = 10) -> bytes:
        record = json.loads(event(seq, "grant", ident, memory=10, cpu=1, slot=seq))
        record["limits"] = {"pool": {"memory_mb": 1000, "cpu_percent": 100, "instances": instances,
                                     "scope": "host"},
                            "global": {"max_memory_mb": 10000, "max_cpu_percent": 1000,
                                       "max_parallel_instances": caps}}
        return json.dumps(record).encode()

    ledger = [ledger_record(f"a{i}", token=i, memory=10, cpu=1, slot=i) for i in (1, 2, 3, 4)]
    # admitted into a pool of 4 that the configuration has since shrunk to 3: clean
    grown = [checkpoint(0)] + [granted(i, f"a{i}", instances=4) for i in (1, 2, 3, 4)]
    assert check(grown, ledger, 4).clean
    # a pool of 2 then, though 3 now: the third and fourth grants over-filled it
    small = [checkpoint(0)] + [granted(i, f"a{i}", instances=2) for i in (1, 2, 3, 4)]
    found = check(small, ledger, 4).findings
    assert [f.id for f in found if "instances: 3 of 2" in f.message] == ["a3"]
    # a MAX_PARALLEL_INSTANCES=2 in force for the grant of a3
    capped = [checkpoint(0), granted(1, "a1", instances=4), granted(2, "a2", instances=4),
              granted(3, "a3", instances=4, caps=2)]
    found = check(capped, ledger[:3], 3).findings
    assert [(f.id, f.message.split(":")[0]) for f in found] == [("a3", "global instance cap")]


def test_release_without_grant_and_double_grant_and_fencing() -> None:
    lines = [checkpoint(0), event(1, "release", "ghost"), event(2, "grant", "a", token=5),
             event(3, "grant", "a", token=4)]
    report = check(lines, [ledger_record("a", token=4)], 3)
    kinds = [f.kind for f in report.findings]
    assert kinds.count("release without grant") == 1
    assert "double grant" in kinds and "fencing" in kinds


def test_ledger_allocations_the_journal_does_not_explain_and_lost_ones() -> None:
    lines = [checkpoint(0), event(1, "grant", "a")]
    report = check(lines, [ledger_record("stranger", token=9)], 1)
    kinds = sorted((f.kind, f.id) for f in report.findings)
    assert kinds == [("lost", "a"), ("unexplained", "stranger")]
    no_journal = check([], [ledger_record("stranger", token=9)], 0)
    assert [f.kind for f in no_journal.findings] == ["unexplained"]


def test_aborted_transactions_are_skipped() -> None:
    """seq 2-3 were written by a process killed before its ledger replace; seq 2 is then
    reused by the next transaction. A trailing seq 4 is above the ledger's journal_seq."""
    lines = [checkpoint(0), event(1, "grant", "a"), event(2, "grant", "dead1", slot=1),
             event(3, "grant", "dead2", slot=2), event(2, "release", "a"), b'{"seq": 3, "event": "gr',
             event(3, "grant", "b", token=2), event(4, "grant", "aborted", slot=1, token=3)]
    records, unreadable = parse_lines(lines)
    history = committed_history(records, 3, unreadable=unreadable)
    assert [e["id"] for e in history.events()] == ["a", "a", "b"]
    assert history.aborted_events == 3 and history.torn_lines == 1
    report = check(lines, [ledger_record("b", token=2)], 3)
    assert report.clean, report.findings
    assert len(report.notes) == 2


def test_replay_starts_at_the_oldest_checkpoint_and_checks_segments_agree() -> None:
    rotated = [checkpoint(10, [ledger_record("old", token=10)], reason="rotate"), event(11, "grant", "b", token=11,
                                                                                         slot=1)]
    current = [checkpoint(11, [ledger_record("old", token=10), ledger_record("b", token=11, slot=1)],
                          reason="rotate"), event(12, "release", "old")]
    report = check(rotated + current, [ledger_record("b", token=11, slot=1)], 12)
    assert report.clean, report.findings
    broken = [checkpoint(11, [ledger_record("b", token=11, slot=1)], reason="rotate"), event(12, "release", "old")]
    report = check(rotated + broken, [ledger_record("b", token=11, slot=1)], 12)
    assert {f.kind for f in report.findings} == {"journal", "release without grant"}


def test_another_ledgers_history_is_not_mixed_in() -> None:
    previous = [checkpoint(0), event(1, "grant", "x"), event(2, "grant", "y", slot=1)]
    fresh = [checkpoint(0, reason="new ledger"), event(1, "grant", "z")]
    report = check(previous + fresh, [ledger_record("z", token=1)], 1)
    assert report.clean, report.findings
    assert any("earlier ledger" in n for n in report.notes)


def test_recent_events_limit() -> None:
    lines = [checkpoint(0)] + [event(i, "grant" if i % 2 else "release", f"a{(i + 1) // 2}") for i in range(1, 7)]
    assert [e["seq"] for e in recent_events(lines, committed_seq=6, limit=2)[0]] == [5, 6]
    assert len(recent_events(lines, committed_seq=6)[0]) == 6
    assert recent_events(lines, committed_seq=6, limit=0)[0] == []


# -- the files ---------------------------------------------------------------------------------

@pytest.fixture
def engine_for(small_config: Path, ledger_path: Path):
    from netra_rm.core.engine import Engine
    from netra_rm.ledger.file import FileLedger

    def make(max_bytes: int = 4 << 20) -> Engine:
        from netra_rm.config import load_config

        return Engine(load_config(str(small_config), env={}), FileLedger(ledger_path, journal_max_bytes=max_bytes),
                      env={})

    return make


def test_every_event_is_one_line_and_the_ledger_records_the_last_seq(engine_for, ledger_path: Path) -> None:
    engine = engine_for()
    me = engine.owner(None)
    a = engine.allocate(engine.resolve_request("tiny", "x", memory_mb=100), me)
    engine.release([a.id])
    lines = ledger_path.with_name("ledger.json.journal").read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["checkpoint", "grant", "release"]
    assert [r.get("seq") for r in records[1:]] == [1, 2]
    assert records[1]["fencing_token"] > 0 and records[1]["owner"]["host"]
    assert records[2]["fencing_token"] == records[1]["fencing_token"]
    assert json.loads(ledger_path.read_text())["journal_seq"] == 2


def test_rotation_keeps_two_files_each_starting_with_a_checkpoint(engine_for, ledger_path: Path) -> None:
    engine = engine_for(max_bytes=2000)
    me = engine.owner(None)
    keep = engine.allocate(engine.resolve_request("tiny", "keep", memory_mb=100), me)
    for _ in range(30):
        a = engine.allocate(engine.resolve_request("tiny", "churn", memory_mb=100), me)
        engine.release([a.id])
    journal = ledger_path.with_name("ledger.json.journal")
    rotated = ledger_path.with_name("ledger.json.journal.1")
    assert journal.exists() and rotated.exists()
    for path in (journal, rotated):
        first = json.loads(path.read_bytes().splitlines()[0])
        assert first["event"] == "checkpoint" and first["reason"] == "rotate"
        assert keep.id in [x["id"] for x in first["allocations"]]
        assert path.stat().st_size < 2000 + 1000
    from netra_rm.core.verify import verify_ledger

    report = verify_ledger(engine)
    assert report.clean, report.findings
    assert len(report.files) == 2


def test_a_fresh_ledger_starts_a_fresh_journal(engine_for, ledger_path: Path) -> None:
    engine = engine_for()
    me = engine.owner(None)
    engine.allocate(engine.resolve_request("tiny", "old", memory_mb=100), me)
    ledger_path.rename(ledger_path.with_name("moved-aside.json"))
    engine = engine_for()
    engine.allocate(engine.resolve_request("tiny", "new", memory_mb=100), me)
    current = ledger_path.with_name("ledger.json.journal").read_bytes().splitlines()
    assert json.loads(current[0])["reason"] == "new ledger"
    from netra_rm.core.verify import verify_ledger

    report = verify_ledger(engine)
    assert report.clean, report.findings


def test_a_torn_last_line_does_not_swallow_the_next_one(engine_for, ledger_path: Path) -> None:
    engine = engine_for()
    me = engine.owner(None)
    engine.allocate(engine.resolve_request("tiny", "a", memory_mb=100), me)
    journal = ledger_path.with_name("ledger.json.journal")
    with journal.open("ab") as f:
        f.write(b'{"seq": 2, "event": "gra')
    engine.allocate(engine.resolve_request("tiny", "b", memory_mb=100), me)
    last = json.loads(journal.read_bytes().splitlines()[-1])
    assert last["seq"] == 2 and last["category"] == "b"
    from netra_rm.core.verify import verify_ledger

    report = verify_ledger(engine)
    assert report.clean and any("incomplete" in n for n in report.notes)


def test_a_journal_write_failure_leaves_ledger_and_journal_unchanged(engine_for, ledger_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import netra_rm.ledger.journal as journal_mod
    from netra_rm.errors import LedgerError

    engine = engine_for()
    me = engine.owner(None)
    engine.allocate(engine.resolve_request("tiny", "a", memory_mb=100), me)
    journal = ledger_path.with_name("ledger.json.journal")
    before = (ledger_path.read_bytes(), journal.read_bytes())

    def half_then_enospc(fd: int, payload: bytes) -> None:
        import errno
        import os

        os.write(fd, payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod, "_write_all", half_then_enospc)
    with pytest.raises(LedgerError, match="No space left on device; the ledger is unchanged"):
        engine.allocate(engine.resolve_request("tiny", "b", memory_mb=100), me)
    assert (ledger_path.read_bytes(), journal.read_bytes()) == before


def test_malformed_journal_lines_are_counted_with_their_numbers_never_a_crash() -> None:
    lines = [checkpoint(0), event(1, "grant", "a"), b'{"seq": "x", "event": "grant"}', b"[1, 2]",
             b'{"seq": 3, "event": "grant", "id": "b", "memory_mb": "lots", "cpu_percent": 1}',
             b'{"seq": 4, "event": "release"}', b"\xff\xfe", b'{"seq": 5, "event": "grant", "id": "c", '
             b'"memory_mb": 1, "cpu_percent": 1, "charges": 7}', event(6, "release", "a")]
    report = check(lines, [], 6)
    assert report.clean, report.findings
    assert report.unreadable == (3, 4, 5, 6, 7, 8)
    assert any("6 incomplete or unreadable journal line(s) were skipped (line 3, 4, 5, 6, 7, 8)" in n
               for n in report.notes)
    events, unreadable = recent_events(lines, committed_seq=6)
    assert [e["seq"] for e in events] == [1, 6] and len(unreadable) == 6


# -- the commands --------------------------------------------------------------------------------

def test_verify_and_history_commands(cli, small_config: Path, ledger_path: Path) -> None:
    cfg = ["--config", str(small_config)]
    ids = [cli(*cfg, "allocate", "--layer", "tiny", "--category", f"c{i}", "--memory-mb", "100").stdout.strip()
           for i in range(3)]
    cli(*cfg, "release", ids[0])
    clean = cli(*cfg, "verify")
    assert clean.code == 0 and "CLEAN" in clean.stdout and "4 event(s)" in clean.stdout
    assert clean.stderr == ""
    as_json = cli(*cfg, "verify", "--json")
    assert as_json.code == 0 and as_json.json()["clean"] is True and as_json.json()["events_checked"] == 4
    history = cli(*cfg, "history", "--limit", "2", "--json").json()["events"]
    assert [(e["event"], e["category"]) for e in history] == [("grant", "c2"), ("release", "c0")]
    table = cli(*cfg, "history")
    assert table.code == 0 and "release" in table.stdout and ids[2] in table.stdout

    # an allocation slipped into the ledger behind the journal's back, and the pool over-filled
    data = json.loads(ledger_path.read_text())
    forged = dict(data["allocations"][0], id="f0caed000000", fencing_token=99, slots={"layer:tiny": 2})
    for i in range(2):
        data["allocations"].append(dict(forged, id=f"f0caed00000{i}"))
    ledger_path.write_text(json.dumps(data))
    dirty = cli(*cfg, "verify")
    assert dirty.code == 1
    assert "FOUND 2 problem(s)" in dirty.stdout and "f0caed000000" in dirty.stdout
    report = cli(*cfg, "verify", "--json")
    assert report.code == 1
    assert {f["kind"] for f in report.json()["findings"]} == {"unexplained"}


def test_verify_stays_clean_after_the_configuration_shrank(cli, write_config, ledger_path: Path) -> None:
    roomy = write_config("layers:\n  tiny: {services: [], pool: {memory_mb: 300, cpu_percent: 30, instances: 3}}\n"
                         "machine: {check_memory: false}\n", name="roomy.yaml")
    tight = write_config("layers:\n  tiny: {services: [], pool: {memory_mb: 300, cpu_percent: 30, instances: 1}}\n"
                         "machine: {check_memory: false}\n", name="tight.yaml")
    for i in range(3):
        granted = cli("--config", str(roomy), "allocate", "--layer", "tiny", "--category", f"c{i}",
                      "--memory-mb", "50", "--cpu-percent", "5")
        assert granted.code == 0, granted.stderr
    event_line = json.loads((ledger_path.parent / "ledger.json.journal").read_text().splitlines()[-1])
    assert event_line["limits"]["layer:tiny"]["instances"] == 3
    report = cli("--config", str(tight), "verify")
    assert report.code == 0, report.stdout  # admitted under the limits of the time
    status = cli("--config", str(tight), "status", "--json").json()
    assert any("tiny" in c for c in status["resources"]["conflicts"])  # the conflict is now's business


def test_no_password_in_the_journal(cli, small_config: Path, ledger_path: Path) -> None:
    secret = "s3cr3t-pw-123"
    env = {"DATABASE_URL": f"postgresql://app:{secret}@127.0.0.1:1/test"}
    result = cli("--config", str(small_config), "allocate", "--layer", "tiny",
                 "--category", f"postgresql://app:{secret}@db/x", "--memory-mb", "10", env=env)
    assert result.code == 0
    cli("--config", str(small_config), "release", result.stdout.strip(), env=env)
    journal = ledger_path.with_name("ledger.json.journal").read_text()
    assert secret not in journal
    assert "postgresql://app:***@db/x" in journal
    history = cli("--config", str(small_config), "history", "--json", env=env)
    assert secret not in history.stdout
