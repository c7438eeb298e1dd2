"""``verify`` and ``history``: replay the allocation journal and check the invariants.

Pure functions over the journal's lines, the ledger as committed and the configuration,
so the checker is tested without files. Reading them together is each backend's
:meth:`~netra_rm.ledger.base.Ledger.journal_lines` (every backend keeps a journal).

First the lines are reduced to the committed history (see
:mod:`netra_rm.ledger.journal` for why lines can be uncommitted): a line whose ``seq``
is reused later belonged to a transaction that never reached the ledger, and so does a
trailing line above the ledger's ``journal_seq``, or above the next file's checkpoint.
Lines that cannot be read (torn by a killed writer, or malformed) are counted and named
by number, never a crash. Then the history is replayed from the oldest checkpoint with
running sums per pool key (see :mod:`netra_rm.core.accounting`), so the replay costs
time in proportion to the journal, however many allocations are held:

* no pool key (memory, CPU, instances, dedicated) was over-subscribed, measured against
  the capacity each grant was admitted under (its journal event records it, per key);
  events written before that are judged by the configuration in use now;
* no instance (slot) of a pool was held twice, and fencing tokens only grew in every pool
  and were never handed out twice;
* nothing was released, expired or reclaimed that was not granted, nor granted twice;
* at the end, the ledger holds exactly what the journal says is held, and the usage it
  keeps per pool is the sum of its allocations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netra_rm.config.model import Config
from netra_rm.records import (
    Capacity,
    RecordError,
    Usage,
    caps_key,
    cpu_units,
    layer_key,
    parse_key,
    pool_key,
)

if TYPE_CHECKING:
    from netra_rm.core.engine import Engine

MAX_FINDINGS = 200
FREEING = ("release", "expire", "reclaim")
ALLOCATION_EVENTS = ("grant", "migrate", *FREEING)


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
    unreadable: tuple[int, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "clean": self.clean, "ledger": self.ledger, "journal_files": list(self.files),
                "events_checked": self.events, "first_time": self.first_time, "last_time": self.last_time,
                "unreadable_lines": len(self.unreadable), "unreadable_line_numbers": list(self.unreadable[:50]),
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
    unreadable: tuple[int, ...]
    aborted_events: int
    skipped_segments: int

    @property
    def torn_lines(self) -> int:
        return len(self.unreadable)

    def events(self) -> list[dict[str, Any]]:
        return [e for s in self.segments for e in s.events]


# -- reading lines ---------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


def _readable(record: Any) -> bool:
    """Is ``record`` a journal event this checker can use? The structure only (an event
    name, a sequence number, an id for allocation events); amounts are checked as the
    replay applies them, and an event whose amounts are wrong is reported there."""
    if type(record) is not dict:
        return False
    kind = record.get("event")
    if kind == "checkpoint":
        allocations = record.get("allocations", [])
        return type(allocations) is list and all(type(a) is dict and type(a.get("id")) is str for a in allocations)
    if type(kind) is not str or type(record.get("seq")) is not int:
        return False
    if kind in ALLOCATION_EVENTS:
        if type(record.get("id")) is not str:
            return False
        if kind in ("grant", "migrate"):
            memory, cpu = record.get("memory_mb"), record.get("cpu_percent")
            return (type(memory) in (int, float) and type(cpu) in (int, float) and memory == memory and cpu == cpu
                    and type(record.get("charges", ())) in (list, tuple) and type(record.get("slots", {})) is dict)
    return True


def parse_lines(lines: Iterable[bytes], *, first_number: int = 1) -> tuple[list[dict[str, Any]], list[int]]:
    """Decode journal lines; the numbers of lines that do not parse (torn by a killed
    writer) or are not events this checker can use are returned beside the records."""
    records: list[dict[str, Any]] = []
    unreadable: list[int] = []
    for number, raw in enumerate(lines, first_number):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            unreadable.append(number)
            continue
        if _readable(record):
            records.append(record)
        else:
            unreadable.append(number)
    return records, unreadable


def committed_history(records: Sequence[dict[str, Any]], committed_seq: int, *,
                      unreadable: Sequence[int] = ()) -> History:
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
            after = record.get("after", 0)
            close(current, None if record.get("reason") == "new ledger" or not isinstance(after, int) else after)
            current = Segment(checkpoint=record)
            continue
        seq = record["seq"]
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
    return History(segments=tuple(segments), unreadable=tuple(unreadable), aborted_events=aborted,
                   skipped_segments=skipped)


# -- what an event holds, whatever its schema -------------------------------------------------

#: (event or allocation record) -> (pool keys it counts against, its instance per key)
KeysOf = Callable[[Mapping[str, Any]], tuple[tuple[str, ...], dict[str, int]]]


def keys_for_config(config: Config, *, shared: bool) -> KeysOf:
    """How to find the pool keys of a record: its own ``charges`` (schema 2), or, for a
    record written before they were recorded, the keys the configuration gives it."""

    def keys_of(record: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, int]]:
        charges = record.get("charges")
        if charges:  # schema 2: recorded with it (the structure was checked when it was read)
            return tuple(charges), record.get("slots") or {}
        owner = record.get("owner")
        host = owner.get("host", "") if shared and isinstance(owner, Mapping) else ""
        host = host if isinstance(host, str) else ""
        layer = record.get("layer")
        found: list[str] = []
        old_slots: dict[str, int] = {}
        if isinstance(layer, str):
            recorded = record.get("limits")
            pool = recorded.get("pool") if isinstance(recorded, Mapping) else None
            scope = pool.get("scope") if isinstance(pool, Mapping) else None
            if scope not in ("host", "global"):
                scope = config.layers[layer].pool.scope if layer in config.layers else "host"
            key = layer_key(layer, scope, host)
            found += [key, caps_key(host)]
            slot = record.get("slot")
            if isinstance(slot, int) and not isinstance(slot, bool):
                old_slots[key] = slot
        for name in record.get("pools") or ():
            if isinstance(name, str):
                spec = config.pools.get(name)
                found.append(pool_key(name, spec.scope if spec else "global", host))
        return tuple(found), old_slots

    return keys_of


def _v1_capacities(event: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Capacity]:
    """The capacities a schema-1 grant recorded (``limits: {pool, global, shared}``)."""
    recorded = event.get("limits")
    if not isinstance(recorded, Mapping) or not any(k in recorded for k in ("pool", "global", "shared")):
        return {}
    out: dict[str, Capacity] = {}
    try:
        for key in keys:
            kind, name, _ = parse_key(key)
            if kind == "layer" and isinstance(recorded.get("pool"), Mapping):
                p = recorded["pool"]
                out[key] = Capacity(instances=int(p["instances"]), memory_mb=int(p["memory_mb"]),
                                    cpu_units=cpu_units(float(p["cpu_percent"])), dedicated=True)
            elif kind == "caps" and isinstance(recorded.get("global"), Mapping):
                g = recorded["global"]
                out[key] = Capacity(instances=int(g["max_parallel_instances"]), memory_mb=int(g["max_memory_mb"]),
                                    cpu_units=cpu_units(float(g["max_cpu_percent"])))
            elif kind == "pool" and isinstance(recorded.get("shared"), Mapping) \
                    and isinstance(recorded["shared"].get(name), Mapping):
                s = recorded["shared"][name]
                memory, cpu = s.get("memory_mb"), s.get("cpu_percent")
                out[key] = Capacity(instances=int(s["instances"]), memory_mb=None if memory is None else int(memory),
                                    cpu_units=None if cpu is None else cpu_units(float(cpu)))
    except (KeyError, TypeError, ValueError):
        return out
    return out


#: the last capacity parsed per key, with the dict it was parsed from: consecutive grants
#: nearly always record the same capacity, so it is parsed once, not once per grant
_CapacityCache = dict[str, tuple[Any, Capacity | None]]


def _recorded_capacities(event: Mapping[str, Any], keys: Sequence[str], cache: _CapacityCache | None = None
                         ) -> dict[str, Capacity]:
    recorded = event.get("limits")
    if not isinstance(recorded, Mapping):
        return {}
    if "pool" in recorded or "global" in recorded or "shared" in recorded:
        return _v1_capacities(event, keys)
    out: dict[str, Capacity] = {}
    for key in keys:
        raw = recorded.get(key)
        if raw is None:
            continue
        seen = cache.get(key) if cache is not None else None
        if seen is not None and seen[0] == raw:
            capacity = seen[1]
        else:
            try:
                capacity = Capacity.from_dict(raw, f"the capacity of {key}")
            except RecordError:
                capacity = None
            if cache is not None:
                cache[key] = (raw, capacity)
        if capacity is not None:
            out[key] = capacity
    return out


# -- the replay -------------------------------------------------------------------------------

@dataclass
class _Held:
    keys: tuple[str, ...]
    usage: Usage
    slots: dict[str, int]
    record: dict[str, Any]


class _Replay:
    """The running state of a replay: what is held, and the sums per pool key."""

    def __init__(self, keys_of: KeysOf, current: Callable[[str], Capacity | None]) -> None:
        self.keys_of = keys_of
        self.current = current  # the capacity of a key as configured now (old events)
        self.held: dict[str, _Held] = {}
        self.sums: dict[str, list[int]] = {}
        self.slots: dict[str, dict[int, str]] = {}
        self.last_token: dict[str, int] = {}
        self.tokens: set[int] = set()
        self.findings: list[Finding] = []
        self.dropped_findings = 0
        self.unknown_keys: set[str] = set()
        self.capacities: _CapacityCache = {}

    def find(self, kind: str, message: str, record: Mapping[str, Any] | None = None) -> None:
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped_findings += 1
            return
        record = record or {}
        self.findings.append(Finding(kind=kind, message=message, seq=record.get("seq"), time=record.get("time"),
                                     id=record.get("id")))

    def reset(self, allocations: Iterable[Mapping[str, Any]]) -> None:
        self.held, self.sums, self.slots = {}, {}, {}
        for a in allocations:
            try:
                self._hold(a)
            except (TypeError, ValueError):
                continue

    def _hold(self, record: Mapping[str, Any]) -> _Held:
        keys, slots = self.keys_of(record)
        memory, cpu, dedicated = int(record["memory_mb"]), int(round(record["cpu_percent"] * 1000)), \
            1 if record.get("dedicated") else 0
        ident = record["id"]
        held = _Held(keys, Usage(memory, cpu, 1, dedicated), slots, record)  # type: ignore[arg-type]
        self.held[ident] = held
        sums = self.sums
        for key in keys:
            s = sums.get(key)
            if s is None:
                sums[key] = [memory, cpu, 1, dedicated]
            else:
                s[0] += memory
                s[1] += cpu
                s[2] += 1
                s[3] += dedicated
        for key, index in slots.items():
            self.slots.setdefault(key, {})[index] = ident
        return held

    def _free(self, ident: str) -> _Held | None:
        held = self.held.pop(ident, None)
        if held is None:
            return None
        u = held.usage
        for key in held.keys:
            s = self.sums[key]
            s[0] -= u.memory_mb
            s[1] -= u.cpu_units
            s[2] -= 1
            s[3] -= u.dedicated
        for key, index in held.slots.items():
            owners = self.slots.get(key, {})
            if owners.get(index) == ident:
                del owners[index]
        return held

    def apply(self, event: Mapping[str, Any]) -> None:
        kind, ident = event["event"], str(event.get("id", ""))
        if kind in ("grant", "migrate"):  # migrate: copied from another ledger with its own token
            if ident in self.held:
                self.find("double grant", f"{ident} was granted while already held.", event)
                self._free(ident)
            keys, slots = self.keys_of(event)
            for key, index in slots.items():
                other = self.slots.get(key, {}).get(index)
                if other is not None and other != ident:
                    self.find("slot", f"{_label(key)}: slot {index} held twice at once, by {other} and {ident}.",
                              event)
            token = int(event.get("fencing_token") or 0)
            if kind == "grant":
                if token in self.tokens:
                    self.find("fencing", f"{ident} got fencing token {token}, which was handed out before.", event)
                for key in keys:
                    if token <= self.last_token.get(key, 0):
                        self.find("fencing", f"{ident} got fencing token {token} in {_label(key)}, not above the "
                                             f"previous {self.last_token[key]}.", event)
                        break
            self.tokens.add(token)
            for key in keys:
                self.last_token[key] = max(self.last_token.get(key, 0), token)
            held = self._hold(event)
            self.check_after_grant(event, held)
        elif kind in FREEING:
            if self._free(ident) is None:
                self.find("release without grant", f"{ident} was {_past(kind)} but is not held.", event)

    def check_after_grant(self, event: Mapping[str, Any], held: _Held) -> None:
        recorded = _recorded_capacities(event, held.keys, self.capacities)
        when = f"after granting {event.get('id')}"
        for key in held.keys:
            capacity = recorded.get(key) or self.current(key)
            if capacity is None:
                self.unknown_keys.add(key)
                continue
            memory, cpu, count, dedicated = self.sums[key]
            label = _label(key)
            caps = key.startswith("caps")
            what = (("global memory cap", "global CPU cap", "global instance cap") if caps else
                    (f"{label} memory", f"{label} CPU", f"{label} instances"))
            where = f" on {parse_key(key)[2]}" if caps and parse_key(key)[2] else ""
            if capacity.memory_mb is not None and memory > capacity.memory_mb:
                self.find("over-subscribed", f"{what[0]}{where}: {memory} of {capacity.memory_mb} MB held {when}.",
                          event)
            if capacity.cpu_units is not None and cpu > capacity.cpu_units:
                self.find("over-subscribed", f"{what[1]}{where}: {cpu / 1000:g} of {capacity.cpu_units / 1000:g}% "
                                             f"held {when}.", event)
            if count > capacity.instances:
                self.find("over-subscribed", f"{what[2]}{where}: {count} of {capacity.instances} held {when}.",
                          event)
            if dedicated and count > 1 and key.startswith("layer:"):
                self.find("over-subscribed", f"{label}: a dedicated allocation shared the layer with "
                                             f"{count - 1} other(s) {when}.", event)


def _label(key: str) -> str:
    kind, name, host = parse_key(key)
    where = f" on {host}" if host else ""
    if kind == "caps":
        return f"the global caps{where}"
    return f"{'layer' if kind == 'layer' else 'pool'} {name}{where}"


def verify(lines: Iterable[bytes], *, ledger_allocations: Sequence[Mapping[str, Any]], committed_seq: int,
           keys_of: KeysOf, current: Callable[[str], Capacity | None], files: Sequence[str] = (),
           ledger: str = "", ledger_usage: Mapping[str, Usage] | None = None) -> Report:
    """Replay the journal ``lines`` and check every invariant against the ledger as committed.

    :param ledger_allocations: the ledger's allocations (as dicts), read with the journal.
    :param committed_seq: the ledger's ``journal_seq``.
    :param keys_of: how to tell the pool keys of a record (see :func:`keys_for_config`).
    :param current: a key's capacity as configured now, for events that did not record it.
    :param ledger_usage: the usage per key the ledger keeps, to compare with the sums.
    """
    records, unreadable = parse_lines(lines)
    history = committed_history(records, committed_seq, unreadable=unreadable)
    replay = _Replay(keys_of, current)
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
            counter = cp.get("fencing_counter")
            if isinstance(counter, int):
                for key in list(replay.last_token):
                    replay.last_token[key] = max(replay.last_token[key], counter)
            first_time = cp.get("time") if first_time is None else first_time
        elif previous_end is None:
            notes.append("the journal does not begin with a checkpoint; the replay starts from an empty ledger.")
        for event in segment.events:
            if event["event"] in ALLOCATION_EVENTS:
                try:
                    replay.apply(event)
                except (KeyError, TypeError, ValueError):
                    replay.find("journal", f"the event at seq {event.get('seq')} is malformed.", event)
            events += 1
            first_time = event.get("time") if first_time is None else first_time
            last_time = event.get("time", last_time)
        previous_end = set(replay.held)

    ledger_by_id = {a["id"]: a for a in ledger_allocations}
    if not history.segments and ledger_by_id:
        replay.find("unexplained", f"the ledger holds {len(ledger_by_id)} allocation(s) but there is no journal.")
    elif history.segments:
        for ident, a in ledger_by_id.items():
            held = replay.held.get(ident)
            if held is None:
                replay.find("unexplained", f"{ident} ({a.get('layer')}/{a.get('category')}) is in the ledger but "
                                           "the journal never granted it, or released it.", {"id": ident})
            elif (held.record.get("layer"), held.record.get("memory_mb"), held.record.get("cpu_percent"),
                  held.record.get("fencing_token")) != (a.get("layer"), a.get("memory_mb"), a.get("cpu_percent"),
                                                        a.get("fencing_token")):
                replay.find("unexplained", f"{ident} in the ledger differs from its grant in the journal.",
                            {"id": ident})
        for ident, held in replay.held.items():
            if ident not in ledger_by_id:
                replay.find("lost", f"{ident} ({held.record.get('layer')}/{held.record.get('category')}) is held "
                                    "according to the journal but missing from the ledger.", {"id": ident})
    if ledger_usage is not None:
        # the usage a server ledger keeps per key must be the sum of its own allocations
        sums: dict[str, list[int]] = {}
        for a in ledger_allocations:
            try:
                keys, _ = keys_of(a)
                amounts = [int(a["memory_mb"]), cpu_units(float(a["cpu_percent"])), 1]
            except (KeyError, TypeError, ValueError):
                continue
            for key in keys:
                total = sums.setdefault(key, [0, 0, 0])
                for i, v in enumerate(amounts):
                    total[i] += v
        for key in sorted(set(ledger_usage) | set(sums)):
            kept = ledger_usage.get(key, Usage()).to_list()[:3]
            summed = sums.get(key, [0, 0, 0])
            if kept != summed:
                replay.find("usage", f"{_label(key)}: the ledger counts {kept[2]} allocation(s), {kept[0]} MB, but "
                                     f"its allocations add up to {summed[2]}, {summed[0]} MB.")

    if history.aborted_events:
        notes.append(f"{history.aborted_events} line(s) of interrupted transactions that never reached the ledger "
                     "were skipped.")
    if history.unreadable:
        shown = ", ".join(str(n) for n in history.unreadable[:10])
        more = "" if len(history.unreadable) <= 10 else ", ..."
        notes.append(f"{len(history.unreadable)} incomplete or unreadable journal line(s) were skipped (line "
                     f"{shown}{more}).")
    if history.skipped_segments:
        notes.append("older journal lines belong to an earlier ledger at this path and were not checked.")
    if replay.unknown_keys:
        notes.append(f"pool(s) {', '.join(sorted(_label(k) for k in replay.unknown_keys))} are not in the "
                     "configuration and their grants recorded no capacity; they were not checked.")
    if replay.dropped_findings:
        notes.append(f"{replay.dropped_findings} further finding(s) not listed.")
    return Report(findings=tuple(replay.findings), notes=tuple(notes), events=events, first_time=first_time,
                  last_time=last_time, files=tuple(files), ledger=ledger, unreadable=history.unreadable)


def recent_events(lines: Iterable[bytes], *, committed_seq: int, limit: int | None = None
                  ) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """The committed events, oldest first (with ``limit``, only the last ``limit``), and
    the numbers of the lines that could not be read."""
    records, unreadable = parse_lines(lines)
    events = committed_history(records, committed_seq, unreadable=unreadable).events()
    if limit is not None:
        events = events[-limit:] if limit > 0 else []
    return events, tuple(unreadable)


# -- the edge: read the ledger and its journal together -------------------------------------

def current_capacities(engine: Engine) -> Callable[[str], Capacity | None]:
    """A key's capacity as this host's configuration says now (for events without one)."""
    by_key = {c.key: c.capacity for c in (*engine.view.layers.values(), *engine.view.pools.values(),
                                          engine.view.caps)}

    def current(key: str) -> Capacity | None:
        if key in by_key:
            return by_key[key]
        kind, name, host = parse_key(key)
        if kind == "caps":
            return engine.view.caps.capacity
        if kind == "layer" and name in engine.config.layers:
            return engine.view.layers[name].capacity
        if kind == "pool" and name in engine.config.pools:
            return engine.view.pools[name].capacity
        return None

    return current


def verify_ledger(engine: Engine) -> Report:
    """Check the engine's ledger against its journal, with the engine's pools and caps."""
    snapshot, lines, files = engine.ledger.journal_lines()
    from netra_rm.ledger.journal import allocation_record

    return verify(lines, ledger_allocations=[allocation_record(a) for a in snapshot.allocations],
                  committed_seq=snapshot.journal_seq, keys_of=keys_for_config(engine.config, shared=engine.shared),
                  current=current_capacities(engine), files=files, ledger=engine.ledger.location,
                  ledger_usage=snapshot.usage)


def ledger_history(engine: Engine, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` committed journal events of the engine's ledger, oldest first."""
    return history_report(engine, limit=limit)[0]


def history_report(engine: Engine, *, limit: int | None = None) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """The last ``limit`` committed journal events of the engine's ledger, oldest first,
    read from the end of the journal; and the numbers of unreadable lines among those read."""
    if limit is None:
        snapshot, lines, _ = engine.ledger.journal_lines()
        return recent_events(lines, committed_seq=snapshot.journal_seq)
    seq, lines = engine.ledger.journal_tail(max(limit, 1) * 2 + 8)
    return recent_events(lines, committed_seq=seq, limit=limit)


def _past(kind: str) -> str:
    return {"release": "released", "expire": "expired", "reclaim": "reclaimed"}.get(kind, kind)
