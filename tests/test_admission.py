"""Admission is a pure function: every dimension, the global caps, dedicated, never-fits."""

from __future__ import annotations

import pytest

from netra_rm.config.model import Limits, Pool
from netra_rm.core.admission import Usage, admit, lowest_free_slot, validate_request
from netra_rm.core.model import Allocation, Owner, Request
from netra_rm.errors import RequestTooLargeError, UsageError

POOL = Pool(memory_mb=1000, cpu_percent=50, instances=3)
LIMITS = Limits(max_memory_mb=5000, max_cpu_percent=90, max_parallel_instances=10)


def alloc(i: int, *, layer: str = "L", memory: int = 100, cpu: float = 10, slot: int | None = None,
          dedicated: bool = False) -> Allocation:
    return Allocation(id=f"a{i}", layer=layer, category="c", memory_mb=memory, cpu_percent=cpu,
                      dedicated=dedicated, requires=(), created_at=0, expires_at=10, slot=i if slot is None else slot,
                      owner=Owner(host="h", user="u"))


def req(memory: int = 100, cpu: float = 10, dedicated: bool = False) -> Request:
    return Request(layer="L", category="c", memory_mb=memory, cpu_percent=cpu, dedicated=dedicated)


def decide(request: Request, held: list[Allocation], *, others: list[Allocation] = (), limits: Limits = LIMITS,
           machine: float | None = None):
    return admit(request, pool=POOL, limits=limits, layer_allocations=held,
                 all_usage=Usage.of([*held, *others]), machine_free_mb=machine)


def test_fits_in_an_empty_pool_with_slot_zero() -> None:
    d = decide(req(), [])
    assert d.admitted and d.slot == 0 and d.reasons == ()


def test_memory_dimension_refuses_when_full() -> None:
    d = decide(req(memory=300), [alloc(0, memory=800)])
    assert not d.admitted
    assert d.reasons == ("layer L memory: 800 of 1000 MB in use, 300 MB requested.",)


def test_memory_exactly_full_still_fits() -> None:
    assert decide(req(memory=200), [alloc(0, memory=800)]).admitted


def test_cpu_dimension_refuses_when_full() -> None:
    d = decide(req(cpu=20), [alloc(0, cpu=40)])
    assert not d.admitted and "CPU" in d.reasons[0]


def test_instances_dimension_refuses_when_all_slots_taken() -> None:
    held = [alloc(i, memory=1, cpu=1) for i in range(3)]
    d = decide(req(memory=1, cpu=1), held)
    assert not d.admitted and d.reasons == ("layer L instances: all 3 in use.",)


def test_slot_is_lowest_free_index() -> None:
    held = [alloc(0, slot=0), alloc(1, slot=2)]
    assert decide(req(), held).slot == 1
    assert lowest_free_slot([], 4) == 0


def test_global_memory_cap_counts_other_layers() -> None:
    others = [alloc(9, layer="M", memory=4950)]
    d = decide(req(memory=100), [], others=others)
    assert not d.admitted and d.reasons[0].startswith("global memory cap")


def test_global_cpu_and_instance_caps() -> None:
    limits = Limits(max_memory_mb=5000, max_cpu_percent=25, max_parallel_instances=2)
    others = [alloc(8, layer="M", cpu=10), alloc(9, layer="M", cpu=10)]
    d = decide(req(cpu=10), [], others=others, limits=limits)
    assert not d.admitted
    assert any(r.startswith("global CPU cap") for r in d.reasons)
    assert any(r.startswith("global instance cap") for r in d.reasons)


def test_dedicated_needs_an_empty_layer() -> None:
    assert decide(req(dedicated=True), []).admitted
    d = decide(req(dedicated=True), [alloc(0)])
    assert not d.admitted and "dedicated" in d.reasons[0]


def test_nothing_joins_a_layer_held_by_a_dedicated_allocation() -> None:
    d = decide(req(), [alloc(0, dedicated=True)])
    assert not d.admitted and d.reasons == ("layer L: held by a dedicated allocation.",)


def test_dedicated_in_another_layer_does_not_matter() -> None:
    assert decide(req(), [], others=[alloc(5, layer="M", dedicated=True)]).admitted


def test_machine_memory_refuses_when_free_memory_is_short() -> None:
    d = decide(req(memory=300), [], machine=200)
    assert not d.admitted and d.reasons[0].startswith("machine memory: only 200 MB")
    assert decide(req(memory=300), [], machine=300).admitted


@pytest.mark.parametrize(("memory", "cpu", "dimension", "maximum"), [
    (1001, 1, "memory", "1000MB"), (1, 51, "CPU", "50%"),
])
def test_never_fits_is_bad_input_naming_dimension_and_maximum(memory, cpu, dimension, maximum) -> None:
    with pytest.raises(RequestTooLargeError) as info:
        validate_request(req(memory=memory, cpu=cpu), POOL, LIMITS)
    assert dimension in str(info.value) and maximum in str(info.value)


def test_request_larger_than_global_cap_never_fits() -> None:
    limits = Limits(max_memory_mb=500, max_cpu_percent=90, max_parallel_instances=10)
    with pytest.raises(RequestTooLargeError, match="MAX_MEMORY_ALLOCATION_MB"):
        validate_request(req(memory=600), POOL, limits)


@pytest.mark.parametrize("bad", [req(memory=-1), req(cpu=-0.5),
                                 Request(layer="L", category="c", memory_mb=1, cpu_percent=1, duration_minutes=0)])
def test_negative_values_are_usage_errors(bad: Request) -> None:
    with pytest.raises(UsageError):
        validate_request(bad, POOL, LIMITS)
