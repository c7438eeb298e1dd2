"""The queue's fairness rule, as pure functions and through the engine, without processes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from netra_rm.core.admission import admit
from netra_rm.core.queue import ahead_of, blocking_waiter, give_back, ordered, pass_by, waiter_view, would_delay
from netra_rm.records import Allocation, Capacity, Owner, Request, Usage, Waiter, cpu_units

ME = Owner(host="h", user="u", pid=1, start="s")
TINY = "layer:tiny"
OTHER = "layer:other"
CAPS = "caps"
CAPACITY = {TINY: Capacity(instances=3, memory_mb=300, cpu_units=cpu_units(30), dedicated=True),
            OTHER: Capacity(instances=10, memory_mb=1000, cpu_units=cpu_units(100), dedicated=True),
            CAPS: Capacity(instances=1000, memory_mb=100_000, cpu_units=cpu_units(100))}


def request(memory: int, cpu: float = 0.0, *, layer: str = "tiny", dedicated: bool = False,
            priority: int = 0) -> Request:
    return Request(layer=layer, category="c", memory_mb=memory, cpu_units=cpu_units(cpu), dedicated=dedicated,
                   priority=priority)


def keys(layer: str = "tiny") -> tuple[str, ...]:
    return (f"layer:{layer}", CAPS)


def held(token: int, memory: int, cpu: float = 0.0, *, layer: str = "tiny", dedicated: bool = False,
         behind: tuple[str, ...] = ()) -> Allocation:
    return Allocation(id=f"{token:012x}", layer=layer, category="c", memory_mb=memory, cpu_units=cpu_units(cpu),
                      dedicated=dedicated, requires=(), created_at=0, expires_at=1e10, owner=ME, fencing_token=token,
                      charges=keys(layer), slots={f"layer:{layer}": token}, behind=behind)


def waiter(name: str, req: Request, *, after: list[Allocation] = (), since: float = 0.0,
           capacity: dict | None = None) -> Waiter:
    ident = name.encode().hex().ljust(12, "0")[:12]
    w = Waiter(id=ident, request=req, owner=ME, since=since, charges=keys(req.layer or "tiny"),
               capacity={k: c for k, c in (capacity or CAPACITY).items() if k in keys(req.layer or "tiny")})
    for a in after:
        w = pass_by([w], a)[0][0]
    return w


def want(r: Request) -> tuple[Usage, tuple[str, ...]]:
    return r.usage, keys(r.layer or "tiny")


# -- would_delay: the definition ------------------------------------------------------------

def test_a_request_that_fits_beside_the_head_does_not_delay_it() -> None:
    head = waiter("00000000000e", request(100, 30))  # blocked by CPU: something held before it holds 10%
    assert not would_delay(*want(request(100, 0)), head)


def test_a_request_that_the_head_could_not_fit_beside_delays_it() -> None:
    head = waiter("00000000000e", request(100, 30))
    assert would_delay(*want(request(100, 10)), head)


def test_what_went_past_the_head_counts_what_was_held_before_does_not() -> None:
    head = waiter("00000000000e", request(200))
    assert not would_delay(*want(request(100)), head)  # allocations held before it: it waits for them anyway
    head = waiter("00000000000e", request(200), after=[held(3, 100)])  # admitted past the head: 200 + 100 + 100 > 300
    assert would_delay(*want(request(100)), head)


def test_instances_count_too() -> None:
    head = waiter("00000000000e", request(0), after=[held(1, 0), held(2, 0)])
    assert would_delay(*want(request(0)), head)
    assert not would_delay(*want(request(0)), waiter("00000000000e", request(0), after=[held(1, 0)]))


def test_other_layers_meet_only_through_the_global_caps() -> None:
    head = waiter("00000000000e", request(300))
    assert not would_delay(*want(request(900, layer="other")), head)
    tight = {**CAPACITY, CAPS: Capacity(instances=1000, memory_mb=1000, cpu_units=cpu_units(100))}
    head = waiter("00000000000e", request(300), capacity=tight)
    assert would_delay(*want(request(900, layer="other")), head)


def test_dedicated_on_either_side_conflicts_within_the_layer_only() -> None:
    dedicated_head = waiter("00000000000e", request(10, dedicated=True))
    assert would_delay(*want(request(10)), dedicated_head)
    assert not would_delay(*want(request(10, layer="other")), dedicated_head)
    assert would_delay(*want(request(10, dedicated=True)), waiter("00000000000e", request(10)))


def test_going_past_and_giving_back_keep_the_running_sums() -> None:
    head = waiter("00000000000e", request(100))
    a = held(5, 150)
    [head2], behind = pass_by([head], a)
    assert behind == (head.id,) and head2.after[TINY] == Usage(150, 0, 1, 0)
    a = Allocation(**{**a.__dict__, "behind": behind})
    [head3] = give_back([head2], a)
    assert head3.after[TINY] == Usage()


# -- blocking_waiter: every waiter ahead is protected, the first one named ------------------

def test_blocking_waiter_names_the_first_waiter_delayed() -> None:
    ahead = [waiter("w1", request(100, layer="other")), waiter("w2", request(250)),
             waiter("w3", request(300))]
    assert blocking_waiter(*want(request(100)), ahead).id == ahead[1].id
    assert blocking_waiter(*want(request(50)), ahead).id == ahead[2].id
    assert blocking_waiter(*want(request(50)), ahead[:2]) is None
    assert blocking_waiter(*want(request(300)), []) is None


def test_invariant_the_head_fits_beside_whatever_went_past_it() -> None:
    """Admitting greedily by the rule never leaves the head unable to fit once the
    allocations that were ahead of it are gone."""
    import random

    from netra_rm.core.accounting import Charge

    charges = [Charge(TINY, "layer", "tiny", "host", CAPACITY[TINY], False, True),
               Charge(CAPS, "caps", "", "host", CAPACITY[CAPS], False, False)]
    rng = random.Random(7)
    for _ in range(300):
        before = [held(i + 1, rng.choice([0, 50, 100]), rng.choice([0, 5, 10])) for i in range(rng.randrange(0, 3))]
        head = waiter("00000000000e", request(rng.choice([50, 100, 200, 300]), rng.choice([0, 10, 20, 30]),
                                      dedicated=rng.random() < 0.1))
        allocations = list(before)
        token = len(before)
        for _ in range(10):
            candidate = request(rng.choice([0, 50, 100]), rng.choice([0, 5, 10]), dedicated=rng.random() < 0.1)
            used = Usage()
            for a in allocations:
                used = used.plus(a.usage)
            fits_now = admit(candidate, charges, capacity=CAPACITY, usage={TINY: used, CAPS: used},
                             taken={TINY: {a.fencing_token for a in allocations}}).admitted
            if fits_now and blocking_waiter(*want(candidate), [head]) is None:
                token += 1
                granted = held(token, candidate.memory_mb, candidate.cpu_units / 1000, dedicated=candidate.dedicated)
                [head], _ = pass_by([head], granted)
                allocations.append(granted)
        after = head.after.get(TINY, Usage())
        verdict = admit(head.request, charges, capacity=CAPACITY, usage={TINY: after, CAPS: after}, taken={})
        assert verdict.admitted, (head, allocations)


def test_priorities_order_the_queue_and_waiting_raises_them() -> None:
    low = waiter("low", request(10, priority=0), since=0.0)
    high = waiter("high", request(10, priority=5), since=100.0)
    assert [w.id for w in ordered([low, high], now=100.0, aging_seconds=60)] == [high.id, low.id]
    # a stream of high-priority newcomers cannot starve it: after 5 x 60 s of waiting the
    # low one ranks with a new priority-5 request, and it came first
    newcomer = waiter("new", request(10, priority=5), since=299.0)
    assert [w.id for w in ordered([low, newcomer], now=299.0, aging_seconds=60)] == [newcomer.id, low.id]
    newcomer = waiter("new", request(10, priority=5), since=300.0)
    assert [w.id for w in ordered([low, newcomer], now=300.0, aging_seconds=60)] == [low.id, newcomer.id]
    assert [w.id for w in ahead_of([low, high], priority=2, since=100.0, waiter_id=None, now=100.0)] == [high.id]


def test_waiter_round_trip_and_view() -> None:
    w = waiter("0000000000a1", request(100, 10), since=100.0, after=[held(9, 10)])
    assert Waiter.from_dict(w.to_dict()) == w
    view = waiter_view(w, 1, now=112.34)
    assert view["position"] == 1 and view["waited_seconds"] == 12.3 and view["memory_mb"] == 100
    assert "after" not in view and view["effective_priority"] == 0


# -- through the engine, on a real ledger file -------------------------------------------------

@pytest.fixture
def engine(small_config: Path, ledger_path: Path):
    from netra_rm.core.engine import Engine

    return Engine.from_options(config_path=str(small_config), ledger=str(ledger_path), env={})


def test_a_release_hands_the_room_to_the_head_of_the_queue_in_the_same_transaction(engine) -> None:
    me = engine.current_process_owner()
    big = engine.resolve_request("tiny", "big", memory_mb=300, cpu_percent=30)
    holder = engine.allocate(big, me)
    _, w1, _ = engine.allocate_or_join(big, me, waiter_id="0000000000a1", waiter_owner=me)
    _, w2, _ = engine.allocate_or_join(big, me, waiter_id="0000000000a2", waiter_owner=me)
    engine.release([holder.id])
    assert [a.id for a in engine.active_allocations()] == ["0000000000a1"]  # granted before anyone woke
    second, decision = engine.try_admit_waiter(w2, me)
    assert second is None and "300 of 300 MB in use" in decision.reasons[0]
    first, _ = engine.try_admit_waiter(w1, me)
    assert first is not None and first.id == w1.id and first.owner == me
    assert [w.id for w in engine.queue()] == ["0000000000a2"]
    engine.leave_queue(w2.id)
    assert engine.leave_queue(w1.id)  # giving up after the hand-off gives the room back
    assert engine.active_allocations() == []


def test_fifo_the_head_goes_first_even_when_a_later_waiter_checks_first(engine) -> None:
    me = engine.current_process_owner()
    no_process = dataclasses.replace(me, pid=None, start=None)  # nothing to watch: no hand-off
    big = engine.resolve_request("tiny", "big", memory_mb=300, cpu_percent=30)
    holder = engine.allocate(big, me)
    _, w1, _ = engine.allocate_or_join(big, no_process, waiter_id="0000000000a1", waiter_owner=no_process)
    _, w2, _ = engine.allocate_or_join(big, no_process, waiter_id="0000000000a2", waiter_owner=no_process)
    assert [w.id for w in engine.queue()] == ["0000000000a1", "0000000000a2"]
    engine.release([holder.id])
    second, decision = engine.try_admit_waiter(w2, me)
    assert second is None and "would delay number 1" in decision.reasons[0]
    first, _ = engine.try_admit_waiter(w1, me)
    assert first is not None and first.category == "big"
    assert [w.id for w in engine.queue()] == ["0000000000a2"]


def test_newcomers_do_not_jump_the_queue_but_may_go_past_when_harmless(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=200, cpu_percent=10), me)
    head_request = engine.resolve_request("tiny", "00000000000e", memory_mb=100, cpu_percent=30)
    granted, head, _ = engine.allocate_or_join(head_request, me, waiter_id="00000000000e", waiter_owner=me)
    assert granted is None  # CPU: 10 + 30 > 30
    harmless, _ = engine.try_allocate(engine.resolve_request("tiny", "small", memory_mb=100, cpu_percent=0), me)
    assert harmless is not None  # 100 MB fits now, and beside the head once the holder leaves
    blocked, decision = engine.try_allocate(engine.resolve_request("tiny", "cpu", memory_mb=0, cpu_percent=10), me)
    assert blocked is None  # it fits now (2 of 3 instances, 10 of 30 %) but would delay the head
    assert "1 request(s) queued ahead" in decision.reasons[0]


def test_leaving_the_queue(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=300), me)
    _, w, _ = engine.allocate_or_join(engine.resolve_request("tiny", "w", memory_mb=10), me, waiter_id="00000000000f",
                                      waiter_owner=me)
    assert engine.leave_queue("00000000000f") is True
    assert engine.leave_queue("00000000000f") is False
    assert engine.queue() == []


def test_dead_waiters_leave_the_queue(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=300), me)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        ghost = engine.owner(proc.pid)
        engine.allocate_or_join(engine.resolve_request("tiny", "ghost", memory_mb=10), me, waiter_id="00000000000b",
                                waiter_owner=ghost)
        assert [w.id for w in engine.queue()] == ["00000000000b"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert engine.queue() == []


def test_status_shows_waiters_with_their_wait(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=300), me)
    engine.allocate_or_join(engine.resolve_request("tiny", "w", memory_mb=10), me, waiter_id="00000000000f",
                            waiter_owner=me)
    waiters = engine.resource_status()["waiters"]
    assert len(waiters) == 1
    assert waiters[0]["position"] == 1 and waiters[0]["category"] == "w"
    assert waiters[0]["waited_seconds"] >= 0 and waiters[0]["owner"]["pid"] == me.pid


def test_a_release_wakes_only_the_waiters_it_can_serve(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """One wake per grant: of three waiters for a full pool, a release that frees room for
    one wakes the head only; a waiter that fits beside the head (backfill) is woken too."""
    me = engine.current_process_owner()
    woken: list[list[str]] = []
    # (a release also wakes the holder's own channel, "e0" + its id: not a waiter)
    monkeypatch.setattr(engine.ledger, "notify", lambda ids: woken.append([i for i in ids if len(i) == 12]))
    holders = [engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=100, cpu_percent=10), me)
               for _ in range(3)]
    ids = ["0000000000b1", "0000000000b2", "0000000000b3"]
    for ident in ids:
        engine.allocate_or_join(engine.resolve_request("tiny", "w", memory_mb=100, cpu_percent=10), me,
                                waiter_id=ident, waiter_owner=me)
    woken.clear()
    engine.release([holders[0].id])
    assert woken == [[ids[0]]]
    woken.clear()
    assert engine.leave_queue(ids[0]) is True  # the head gives up: the next one can take the free slot
    assert woken == [[ids[1]]]
    woken.clear()
    big = engine.resolve_request("tiny", "big", memory_mb=250, cpu_percent=10)
    engine.allocate_or_join(big, me, waiter_id="0000000000b4", waiter_owner=me)
    engine.leave_queue(ids[1])
    engine.leave_queue(ids[2])
    woken.clear()
    engine.release([holders[1].id])  # 200 MB held, 250 wanted at the head: nobody can be served yet
    assert woken in ([], [[]])


def test_a_signal_just_after_joining_still_leaves_the_queue(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """^C (or run's SIGTERM) can arrive after the join was committed and before it
    returned: the waiter leaves the queue all the same."""
    from netra_rm.core.waiting import allocate_waiting

    me = engine.current_process_owner()
    big = engine.resolve_request("tiny", "big", memory_mb=300, cpu_percent=30)
    engine.allocate(big, me)
    join = engine.allocate_or_join

    def join_then_interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        join(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "allocate_or_join", join_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        allocate_waiting(engine, big, me, wait=True, timeout=30)
    assert engine.queue() == []


def test_a_join_that_fails_does_not_try_to_leave(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger that cannot be reached is not asked again to leave a queue never joined
    (a wait with a timeout must end in time)."""
    from netra_rm.core.waiting import allocate_waiting
    from netra_rm.errors import LedgerError

    def unreachable(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise LedgerError("the ledger cannot be reached.")

    left: list[str] = []
    monkeypatch.setattr(engine, "allocate_or_join", unreachable)
    monkeypatch.setattr(engine, "leave_queue", left.append)
    me = engine.current_process_owner()
    with pytest.raises(LedgerError):
        allocate_waiting(engine, engine.resolve_request("tiny", "big"), me, wait=True, timeout=30)
    assert left == []
