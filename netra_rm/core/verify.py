"""``verify`` and ``history``: replay the allocation journal and check the invariants.

Pure functions over the journal's lines, the ledger as committed and the configuration,
so the checker is tested without files. Reading them (together, under the ledger's
lock) is :meth:`netra_rm.ledger.file.FileLedger.read_with_journal`.

First the lines are reduced to the committed history (see
:mod:`netra_rm.ledger.journal` for why lines can be uncommitted): a line whose ``seq``
is reused later belonged to a transaction that never reached the ledger, and so does a
trailing line above the ledger's ``journal_seq``, or above the next file's checkpoint.
Then the history is replayed from the oldest checkpoint, and every moment is checked:

* no pool (memory, CPU, instances, dedicated) and no global cap was over-subscribed,
  measured against the limits each grant was admitted under (its journal event records
  them), or, for events written before they were recorded, the configuration in use now;
* no slot of a layer was held twice, and fencing tokens only grew;
* nothing was released, expired or reclaimed that was not granted, nor granted twice;
* at the end, the ledger holds exactly what the journal says is held.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netra_rm.config.model import Limits, Pool, SharedPool
from netra_rm.errors import UsageError
from netra_rm.ledger.journal import allocation_record

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine

MAX_FINDINGS = 200
FREEING = ("release", "expire", "reclaim")


@dataclass(frozen=True)
class Finding:
    """One violation: what kind, a sentence, and where in the journal."""

    kind: str
    message: str
    seq: int | None = None
    time: float | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "seq": self.seq, "time": self.time, "id": self.id}


@dataclass(frozen=True)
class Report:
    """What ``verify`` found. ``clean`` when there are no findings; notes are informative."""

    findings: tuple[Finding, ...]
    notes: tuple[str, ...]
    events: int
    first_time: float | None
    last_time: float | None
    files: tuple[str, ...] = ()
    ledger: str = ""

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "clean": self.clean, "ledger": self.ledger, "journal_files": list(self.files),
                "events_checked": self.events, "first_time": self.first_time, "last_time": self.last_time,
                "findings": [f.to_dict() for f in self.findings], "notes": list(self.notes)}


@dataclass
class Segment:
    """One checkpoint and the events after it, up to the next checkpoint."""

    checkpoint: dict[str, Any] | None
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class History:
    """The committed history, as replayable segments, and what was skipped on the way."""

    segments: tuple[Segment, ...]
    torn_lines: int
    aborted_events: int
    skipped_segments: int

    def events(self) -> list[dict[str, Any]]:
        return [e for s in self.segments for e in s.events]


def parse_lines(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Decode journal lines; lines that do not parse (torn by a killed writer) are counted."""
    records: list[dict[str, Any]] = []
    torn = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            torn += 1
            continue
        if isinstance(record, dict) and "event" in record:
            records.append(record)
        else:
            torn += 1
    return records, torn


def committed_history(records: Sequence[dict[str, Any]], committed_seq: int, *, torn: int = 0) -> History:
    """Reduce journal records to what was committed (see the module docstring)."""
    segments: list[Segment] = []
    current = Segment(checkpoint=None)
    aborted = 0

    def close(segment: Segment, last_committed: int | None) -> None:
        nonlocal aborted
        if last_committed is not None:
            kept = [e for e in segment.events if e["seq"] <= last_committed]
            aborted += len(segment.events) - len(kept)
            segment.events = kept
        if segment.checkpoint is not None or segment.events:
            segments.append(segment)

    for record in records:
        if record["event"] == "checkpoint":
            # a "new ledger" checkpoint follows another ledger's lines: no commit point to cut at
            close(current, None if record.get("reason") == "new ledger" else int(record.get("after", 0)))
            current = Segment(checkpoint=record)
            continue
        seq = record.get("seq")
        if not isinstance(seq, int):
            continue
        if current.events and seq <= current.events[-1]["seq"]:
            # a number used again: the lines from it on were an aborted transaction
            kept = [e for e in current.events if e["seq"] < seq]
            aborted += len(current.events) - len(kept)
            current.events = kept
        current.events.append(record)
    close(current, committed_seq)

    # a "new ledger" checkpoint starts another ledger's history: only its own is checked
    skipped = 0
    for i in range(len(segments) - 1, -1, -1):
        cp = segments[i].checkpoint
        if cp is not None and cp.get("reason") == "new ledger":
            skipped = i
            segments = segments[i:]
            break
    return History(segments=tuple(segments), torn_lines=torn, aborted_events=aborted, skipped_segments=skipped)


class _Replay:
    """The running state of a replay: what is held, per layer and in total."""

    def __init__(self, pools: Mapping[str, Pool], limits: Limits, *, per_host: bool = False,
                 shared_pools: Mapping[str, SharedPool] | None = None) -> None:
        self.pools = pools
        self.limits = limits
        self.per_host = per_host
        self.shared_pools = shared_pools or {}
        self.held: dict[str, dict[str, Any]] = {}
        self.findings: list[Finding] = []
        self.dropped_findings = 0
        self.last_token = 0
        self.unknown_layers: set[str] = set()

    def find(self, kind: str, message: str, record: Mapping[str, Any] | None = None) -> None:
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped_findings += 1
            return
        record = record or {}
        self.findings.append(Finding(kind=kind, message=message, seq=record.get("seq"), time=record.get("time"),
                                     id=record.get("id")))

    def reset(self, allocations: Iterable[Mapping[str, Any]]) -> None:
        self.held = {a["id"]: allocation_record(dict(a)) for a in allocations}

    def apply(self, event: Mapping[str, Any]) -> None:
        kind, ident = event["event"], event.get("id", "")
        if kind in ("grant", "migrate"):  # migrate: copied from another ledger with its own token
            if ident in self.held:
                self.find("double grant", f"{ident} was granted while already held.", event)
            token = int(event.get("fencing_token") or 0)
            if kind == "grant" and token <= self.last_token:
                self.find("fencing", f"{ident} got fencing token {token}, not above the previous "
                                     f"{self.last_token}.", event)
            self.last_token = max(self.last_token, token)
            self.held[ident] = allocation_record(dict(event))
            self.check_after_grant(event)
        elif kind in FREEING:
            if self.held.pop(ident, None) is None:
                self.find("release without grant", f"{ident} was {_past(kind)} but is not held.", event)

    def check_after_grant(self, event: Mapping[str, Any]) -> None:
        layer = event["layer"]
        raw_limits = event.get("limits")
        recorded: Mapping[str, Any] = raw_limits if isinstance(raw_limits, Mapping) else {}
        pool = _recorded(Pool, recorded.get("pool")) or self.pools.get(layer)
        limits = _recorded(Limits, recorded.get("global")) or self.limits
        shared_pools = dict(self.shared_pools)
        raw_shared = recorded.get("shared")
        for name, raw in (raw_shared.items() if isinstance(raw_shared, Mapping) else ()):
            shared = _recorded(SharedPool, {**raw, "name": name}) if isinstance(raw, Mapping) else None
            if shared is not None:
                shared_pools[name] = shared
        held = list(self.held.values())
        local = held
        if self.per_host:  # a shared ledger: host pools and the caps count the grant's host only
            host = (event.get("owner") or {}).get("host")
            local = [a for a in held if (a.get("owner") or {}).get("host") == host]
        scope = getattr(pool, "scope", "host")
        in_layer = [a for a in (local if scope == "host" else held) if a["layer"] == layer]
        when = f"after granting {event.get('id')}"
        for name in event.get("pools") or ():
            shared = shared_pools.get(name)
            if shared is None:
                continue
            holders = [a for a in (local if shared.scope == "host" else held) if name in (a.get("pools") or ())]
            if len(holders) > shared.instances:
                self.find("over-subscribed", f"pool {name}: {len(holders)} of {shared.instances} instances held "
                                             f"{when}.", event)
            if shared.memory_mb is not None and sum(a["memory_mb"] for a in holders) > shared.memory_mb:
                self.find("over-subscribed", f"pool {name} memory: more than {shared.memory_mb} MB held {when}.",
                          event)
            if shared.cpu_percent is not None and sum(a["cpu_percent"] for a in holders) > shared.cpu_percent + 1e-6:
                self.find("over-subscribed", f"pool {name} CPU: more than {shared.cpu_percent:g}% held {when}.",
                          event)
        if pool is None:
            self.unknown_layers.add(layer)
        else:
            memory = sum(a["memory_mb"] for a in in_layer)
            cpu = sum(a["cpu_percent"] for a in in_layer)
            if memory > pool.memory_mb:
                self.find("over-subscribed", f"layer {layer} memory: {memory} of {pool.memory_mb} MB held {when}.",
                          event)
            if cpu > pool.cpu_percent + 1e-6:
                self.find("over-subscribed", f"layer {layer} CPU: {cpu:g} of {pool.cpu_percent:g}% held {when}.",
                          event)
            if len(in_layer) > pool.instances:
                self.find("over-subscribed", f"layer {layer} instances: {len(in_layer)} of {pool.instances} "
                                             f"held {when}.", event)
        if len(in_layer) > 1 and any(a.get("dedicated") for a in in_layer):
            self.find("over-subscribed", f"layer {layer}: a dedicated allocation shared the layer with "
                                         f"{len(in_layer) - 1} other(s) {when}.", event)
        slots = [a.get("slot") for a in in_layer]
        if len(set(slots)) != len(slots):
            self.find("slot", f"layer {layer}: slot {event.get('slot')} held twice at once {when}.", event)
        total_memory = sum(a["memory_mb"] for a in local)
        total_cpu = sum(a["cpu_percent"] for a in local)
        if total_memory > limits.max_memory_mb:
            self.find("over-subscribed", f"global memory cap: {total_memory} of {limits.max_memory_mb} MB held "
                                         f"{when}.", event)
        if total_cpu > limits.max_cpu_percent + 1e-6:
            self.find("over-subscribed", f"global CPU cap: {total_cpu:g} of {limits.max_cpu_percent:g}% held "
                                         f"{when}.", event)
        if len(local) > limits.max_parallel_instances:
            self.find("over-subscribed", f"global instance cap: {len(local)} of "
                                         f"{limits.max_parallel_instances} held {when}.", event)


def _recorded(kind: Any, raw: Any) -> Any:
    """``kind(**raw)`` from a journal event's recorded limits; None if absent or malformed."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return kind(**raw)
    except TypeError:
        return None


def verify(lines: Iterable[bytes], *, ledger_allocations: Sequence[Mapping[str, Any]], committed_seq: int,
           pools: Mapping[str, Pool], limits: Limits, files: Sequence[str] = (), ledger: str = "",
           per_host: bool = False, shared_pools: Mapping[str, SharedPool] | None = None) -> Report:
    """Replay the journal ``lines`` and check every invariant against the ledger as committed.

    :param ledger_allocations: the ledger's allocations (as dicts), read with the journal.
    :param committed_seq: the ledger's ``journal_seq``.
    :param per_host: a ledger shared by several hosts: host-scoped pools and the global
        caps are checked per host.
    """
    records, torn = parse_lines(lines)
    history = committed_history(records, committed_seq, torn=torn)
    replay = _Replay(pools, limits, per_host=per_host, shared_pools=shared_pools)
    notes: list[str] = []
    events = 0
    first_time = last_time = None
    previous_end: set[str] | None = None
    for segment in history.segments:
        cp = segment.checkpoint
        if cp is not None:
            ids = {a["id"] for a in cp.get("allocations", [])}
            if previous_end is not None and ids != previous_end and cp.get("reason") != "new ledger":
                replay.find("journal", f"the checkpoint after seq {cp.get('after')} holds {len(ids)} allocation(s), "
                                       f"the replay {len(previous_end)}: history is missing.", cp)
            replay.reset(cp.get("allocations", []))
            replay.last_token = max(replay.last_token, int(cp.get("fencing_counter") or 0))
            first_time = cp.get("time") if first_time is None else first_time
        elif previous_end is None:
            notes.append("the journal does not begin with a checkpoint; the replay starts from an empty ledger.")
        for event in segment.events:
            replay.apply(event)
            events += 1
            first_time = event.get("time") if first_time is None else first_time
            last_time = event.get("time", last_time)
        previous_end = set(replay.held)

    ledger_by_id = {a["id"]: a for a in ledger_allocations}
    if not history.segments and ledger_by_id:
        replay.find("unexplained", f"the ledger holds {len(ledger_by_id)} allocation(s) but there is no journal.")
    else:
        for ident, a in ledger_by_id.items():
            held = replay.held.get(ident)
            if held is None:
                replay.find("unexplained", f"{ident} ({a.get('layer')}/{a.get('category')}) is in the ledger but "
                                           "the journal never granted it, or released it.", {"id": ident})
            elif (held["layer"], held["memory_mb"], held["cpu_percent"], held["fencing_token"]) != (
                    a.get("layer"), a.get("memory_mb"), a.get("cpu_percent"), a.get("fencing_token")):
                replay.find("unexplained", f"{ident} in the ledger differs from its grant in the journal.",
                            {"id": ident})
        for ident, held in replay.held.items():
            if ident not in ledger_by_id:
                replay.find("lost", f"{ident} ({held['layer']}/{held['category']}) is held according to the "
                                    "journal but missing from the ledger.", {"id": ident})

    if history.aborted_events:
        notes.append(f"{history.aborted_events} line(s) of interrupted transactions that never reached the ledger "
                     "were skipped.")
    if history.torn_lines:
        notes.append(f"{history.torn_lines} incomplete line(s) from interrupted writes were skipped.")
    if history.skipped_segments:
        notes.append("older journal lines belong to an earlier ledger at this path and were not checked.")
    if replay.unknown_layers:
        notes.append(f"layer(s) {', '.join(sorted(replay.unknown_layers))} are not in the configuration; their "
                     "pools were not checked.")
    if replay.dropped_findings:
        notes.append(f"{replay.dropped_findings} further finding(s) not listed.")
    return Report(findings=tuple(replay.findings), notes=tuple(notes), events=events, first_time=first_time,
                  last_time=last_time, files=tuple(files), ledger=ledger)


def recent_events(lines: Iterable[bytes], *, committed_seq: int, limit: int | None = None) -> list[dict[str, Any]]:
    """The committed events, oldest first; with ``limit``, only the last ``limit``."""
    records, torn = parse_lines(lines)
    events = committed_history(records, committed_seq, torn=torn).events()
    if limit is not None:
        events = events[-limit:] if limit > 0 else []
    return events


# -- the edge: read the ledger and its journal together -------------------------------------

def _read(engine: Engine) -> tuple[Any, list[bytes], list[str]]:
    reader = getattr(engine.ledger, "read_with_journal", None)
    if reader is None:
        raise UsageError(f"the ledger {engine.ledger.location} keeps no journal; verify and history need the "
                         "file ledger.")
    return reader()


def verify_ledger(engine: Engine) -> Report:
    """Check the engine's ledger against its journal, with the engine's pools and caps."""
    state, lines, files = _read(engine)
    pools = {name: layer.pool for name, layer in engine.config.layers.items()}
    return verify(lines, ledger_allocations=[a.to_dict() for a in state.allocations],
                  committed_seq=state.journal_seq, pools=pools, limits=engine.config.limits, files=files,
                  ledger=engine.ledger.location, per_host=engine.shared, shared_pools=engine.config.pools)


def ledger_history(engine: Engine, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` committed journal events of the engine's ledger, oldest first."""
    state, lines, _ = _read(engine)
    return recent_events(lines, committed_seq=state.journal_seq, limit=limit)


def _past(kind: str) -> str:
    return {"release": "released", "expire": "expired", "reclaim": "reclaimed"}.get(kind, kind)
