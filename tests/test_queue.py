"""The queue's fairness rule, as pure functions and through the engine, without processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netra_rm.config.model import Limits, Pool
from netra_rm.core.model import Allocation, Owner, Request
from netra_rm.core.queue import Waiter, blocking_waiter, position, waiter_view, would_delay

POOLS = {"tiny": Pool(memory_mb=300, cpu_percent=30, instances=3),
         "other": Pool(memory_mb=1000, cpu_percent=100, instances=10)}
LIMITS = Limits(max_memory_mb=100_000, max_cpu_percent=100, max_parallel_instances=1000)
ME = Owner(host="h", user="u", pid=1, start="s")


def request(memory: int, cpu: float = 0.0, *, layer: str = "tiny", dedicated: bool = False) -> Request:
    return Request(layer=layer, category="c", memory_mb=memory, cpu_percent=cpu, dedicated=dedicated)


def held(token: int, memory: int, cpu: float = 0.0, *, layer: str = "tiny", dedicated: bool = False) -> Allocation:
    return Allocation(id=f"a{token}", layer=layer, category="c", memory_mb=memory, cpu_percent=cpu,
                      dedicated=dedicated, requires=(), created_at=0, expires_at=1e12, slot=token, owner=ME,
                      fencing_token=token)


def waiter(name: str, req: Request, fence: int, since: float = 0.0) -> Waiter:
    return Waiter(id=name, request=req, owner=ME, since=since, fence=fence)


# -- would_delay: the definition ------------------------------------------------------------

def test_a_request_that_fits_beside_the_head_does_not_delay_it() -> None:
    head = waiter("head", request(100, 30), fence=1)  # blocked by CPU: a1 holds 10%
    allocations = [held(1, 200, 10)]
    assert not would_delay(request(100, 0), head, allocations=allocations, pools=POOLS, limits=LIMITS)


def test_a_request_that_the_head_could_not_fit_beside_delays_it() -> None:
    head = waiter("head", request(100, 30), fence=1)
    assert would_delay(request(100, 10), head, allocations=[held(1, 200, 10)], pools=POOLS, limits=LIMITS)


def test_allocations_held_before_the_head_queued_do_not_count_those_after_do() -> None:
    head = waiter("head", request(200), fence=2)
    old = [held(1, 100), held(2, 100)]  # the head waits for these anyway
    assert not would_delay(request(100), head, allocations=old, pools=POOLS, limits=LIMITS)
    newer = old + [held(3, 100)]  # admitted past the head earlier: 200 + 100 + 100 > 300
    assert would_delay(request(100), head, allocations=newer, pools=POOLS, limits=LIMITS)


def test_instances_count_too() -> None:
    head = waiter("head", request(0), fence=0)
    after = [held(1, 0), held(2, 0)]
    assert would_delay(request(0), head, allocations=after, pools=POOLS, limits=LIMITS)
    assert not would_delay(request(0), head, allocations=after[:1], pools=POOLS, limits=LIMITS)


def test_other_layers_meet_only_through_the_global_caps() -> None:
    head = waiter("head", request(300), fence=0)
    assert not would_delay(request(900, layer="other"), head, allocations=[], pools=POOLS, limits=LIMITS)
    tight = Limits(max_memory_mb=1000, max_cpu_percent=100, max_parallel_instances=1000)
    assert would_delay(request(900, layer="other"), head, allocations=[], pools=POOLS, limits=tight)


def test_dedicated_on_either_side_conflicts_within_the_layer_only() -> None:
    dedicated_head = waiter("head", request(10, dedicated=True), fence=0)
    assert would_delay(request(10), dedicated_head, allocations=[], pools=POOLS, limits=LIMITS)
    assert not would_delay(request(10, layer="other"), dedicated_head, allocations=[], pools=POOLS, limits=LIMITS)
    head = waiter("head", request(10), fence=0)
    assert would_delay(request(10, dedicated=True), head, allocations=[], pools=POOLS, limits=LIMITS)


def test_a_waiter_whose_layer_left_the_configuration_delays_nobody() -> None:
    gone = waiter("head", request(10, layer="removed"), fence=0)
    assert not would_delay(request(300), gone, allocations=[], pools=POOLS, limits=LIMITS)


# -- blocking_waiter: every waiter ahead is protected, the first one named ------------------

def test_blocking_waiter_names_the_first_waiter_delayed() -> None:
    ahead = [waiter("w1", request(100, layer="other"), fence=0), waiter("w2", request(250), fence=0),
             waiter("w3", request(300), fence=0)]
    assert blocking_waiter(request(100), ahead, allocations=[], pools=POOLS, limits=LIMITS).id == "w2"
    assert blocking_waiter(request(50), ahead, allocations=[], pools=POOLS, limits=LIMITS).id == "w3"
    assert blocking_waiter(request(50), ahead[:2], allocations=[], pools=POOLS, limits=LIMITS) is None
    assert blocking_waiter(request(300), [], allocations=[], pools=POOLS, limits=LIMITS) is None


def test_invariant_the_head_fits_beside_whatever_went_past_it() -> None:
    """Admitting greedily by the rule never leaves the head unable to fit once the
    allocations that were ahead of it are gone."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        before = [held(i + 1, rng.choice([0, 50, 100]), rng.choice([0, 5, 10])) for i in range(rng.randrange(0, 3))]
        fence = len(before)
        head = waiter("head", request(rng.choice([50, 100, 200, 300]), rng.choice([0, 10, 20, 30]),
                                      dedicated=rng.random() < 0.1), fence=fence)
        allocations = list(before)
        token = fence
        for _ in range(10):
            candidate = request(rng.choice([0, 50, 100]), rng.choice([0, 5, 10]), dedicated=rng.random() < 0.1)
            from netra_rm.core.admission import Usage, admit

            fits_now = admit(candidate, pool=POOLS["tiny"], limits=LIMITS, layer_allocations=allocations,
                             all_usage=Usage.of(allocations)).admitted
            if fits_now and blocking_waiter(candidate, [head], allocations=allocations, pools=POOLS,
                                            limits=LIMITS) is None:
                token += 1
                allocations.append(held(token, candidate.memory_mb, candidate.cpu_percent,
                                        dedicated=candidate.dedicated))
        past = [a for a in allocations if a.fencing_token > fence]
        verdict = admit(head.request, pool=POOLS["tiny"], limits=LIMITS, layer_allocations=past,
                        all_usage=Usage.of(past))
        assert verdict.admitted, (head, past)


def test_waiter_round_trip_position_and_view() -> None:
    w = waiter("w1", request(100, 10), fence=4, since=100.0)
    assert Waiter.from_dict(w.to_dict()) == w
    assert position([waiter("w0", request(1), 0), w], "w1") == 1
    assert position([w], "nope") is None
    view = waiter_view(w, 1, now=112.34)
    assert view["position"] == 1 and view["waited_seconds"] == 12.3 and view["memory_mb"] == 100


# -- through the engine, on a real ledger file -------------------------------------------------

@pytest.fixture
def engine(small_config: Path, ledger_path: Path):
    from netra_rm.core.engine import Engine

    return Engine.from_options(config_path=str(small_config), ledger=str(ledger_path), env={})


def test_fifo_the_head_goes_first_even_when_a_later_waiter_checks_first(engine) -> None:
    me = engine.current_process_owner()
    big = engine.resolve_request("tiny", "big", memory_mb=300, cpu_percent=30)
    holder = engine.allocate(big, me)
    _, w1, _ = engine.allocate_or_join(big, me, waiter_id="w1", waiter_owner=me)
    _, w2, _ = engine.allocate_or_join(big, me, waiter_id="w2", waiter_owner=me)
    assert [w.id for w in engine.queue()] == ["w1", "w2"]
    engine.release([holder.id])
    second, decision = engine.try_admit_waiter(w2, me)
    assert second is None and "would delay number 1" in decision.reasons[0]
    first, _ = engine.try_admit_waiter(w1, me)
    assert first is not None and first.category == "big"
    assert [w.id for w in engine.queue()] == ["w2"]


def test_newcomers_do_not_jump_the_queue_but_may_go_past_when_harmless(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=200, cpu_percent=10), me)
    head_request = engine.resolve_request("tiny", "head", memory_mb=100, cpu_percent=30)
    granted, head, _ = engine.allocate_or_join(head_request, me, waiter_id="head", waiter_owner=me)
    assert granted is None  # CPU: 10 + 30 > 30
    harmless, _ = engine.try_allocate(engine.resolve_request("tiny", "small", memory_mb=100, cpu_percent=0), me)
    assert harmless is not None  # 100 MB fits now, and beside the head once the holder leaves
    blocked, decision = engine.try_allocate(engine.resolve_request("tiny", "cpu", memory_mb=0, cpu_percent=10), me)
    assert blocked is None  # it fits now (2 of 3 instances, 10 of 30 %) but would delay the head
    assert "1 request(s) queued ahead" in decision.reasons[0]


def test_leaving_the_queue(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=300), me)
    _, w, _ = engine.allocate_or_join(engine.resolve_request("tiny", "w", memory_mb=10), me, waiter_id="w",
                                      waiter_owner=me)
    assert engine.leave_queue("w") is True
    assert engine.leave_queue("w") is False
    assert engine.queue() == []


def test_dead_waiters_leave_the_queue(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=300), me)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        ghost = engine.owner(proc.pid)
        engine.allocate_or_join(engine.resolve_request("tiny", "ghost", memory_mb=10), me, waiter_id="ghost",
                                waiter_owner=ghost)
        assert [w.id for w in engine.queue()] == ["ghost"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert engine.queue() == []


def test_status_shows_waiters_with_their_wait(engine) -> None:
    me = engine.current_process_owner()
    engine.allocate(engine.resolve_request("tiny", "holder", memory_mb=300), me)
    engine.allocate_or_join(engine.resolve_request("tiny", "w", memory_mb=10), me, waiter_id="w", waiter_owner=me)
    waiters = engine.resource_status()["waiters"]
    assert len(waiters) == 1
    assert waiters[0]["position"] == 1 and waiters[0]["category"] == "w"
    assert waiters[0]["waited_seconds"] >= 0 and waiters[0]["owner"]["pid"] == me.pid
