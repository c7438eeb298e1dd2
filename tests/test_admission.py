"""Admission is a pure function over pool keys: every dimension, the global caps,
dedicated, never-fits, exact arithmetic, and no quantity (NaN, infinities, huge numbers)
ever gets past a pool."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netra_rm.config.model import Layer, Limits, Pool
from netra_rm.core.accounting import Charge, caps_charge, default_share, layer_charge
from netra_rm.core.admission import admit, lowest_free, never_fits
from netra_rm.errors import RequestTooLargeError, UsageError
from netra_rm.records import Capacity, Request, Usage, cpu_units

POOL = Pool(memory_mb=1000, cpu_percent=50, instances=3)
LIMITS = Limits(max_memory_mb=5000, max_cpu_percent=90, max_parallel_instances=10)
LAYER = Layer(name="L", services=(), pool=POOL, default_memory_mb=333, default_cpu_percent=16.666)
CHARGES = [layer_charge(LAYER, ""), caps_charge(LIMITS, "")]
CAPACITY = {c.key: c.capacity for c in CHARGES}
LKEY, CKEY = CHARGES[0].key, CHARGES[1].key


def req(memory: int = 100, cpu: float = 10, dedicated: bool = False) -> Request:
    return Request(layer="L", category="c", memory_mb=memory, cpu_units=cpu_units(cpu), dedicated=dedicated)


def use(memory: int = 0, cpu: float = 0, n: int = 0, dedicated: int = 0) -> Usage:
    return Usage(memory, cpu_units(cpu), n, dedicated)


def decide(request: Request, layer: Usage | None = None, caps: Usage | None = None, *, taken: set[int] | None = None,
           capacity: dict | None = None, machine: float | None = None, drained: tuple[str, ...] = ()):
    layer = layer or Usage()
    return admit(request, CHARGES, capacity=capacity or CAPACITY, usage={LKEY: layer, CKEY: caps or layer},
                 taken={LKEY: taken or set(range(layer.instances))}, machine_free_mb=machine, drained=drained)


def test_fits_in_an_empty_pool_with_slot_zero() -> None:
    d = decide(req())
    assert d.admitted and d.slot == 0 and d.reasons == ()


def test_memory_dimension_refuses_when_full() -> None:
    d = decide(req(memory=300), use(800, 10, 1))
    assert not d.admitted
    assert d.reasons == ("layer L memory: 800 of 1000 MB in use, 300 MB requested.",)


def test_memory_exactly_full_still_fits() -> None:
    assert decide(req(memory=200), use(800, 10, 1)).admitted


def test_cpu_dimension_refuses_when_full() -> None:
    d = decide(req(cpu=20), use(100, 40, 1))
    assert not d.admitted and "CPU" in d.reasons[0]


def test_instances_dimension_refuses_when_all_slots_taken() -> None:
    d = decide(req(memory=1, cpu=1), use(3, 3, 3))
    assert not d.admitted and d.reasons == ("layer L instances: all 3 in use.",)


def test_slot_is_lowest_free_index() -> None:
    assert decide(req(), use(200, 20, 2), taken={0, 2}).slot == 1
    assert lowest_free([], 4) == 0 and lowest_free({0, 1}, 2) is None


def test_global_caps_count_what_other_layers_hold() -> None:
    d = decide(req(memory=100), Usage(), caps=use(4950, 10, 1))
    assert not d.admitted and d.reasons[0].startswith("global memory cap")
    tight = {**CAPACITY, CKEY: Capacity(instances=2, memory_mb=5000, cpu_units=cpu_units(25))}
    d = decide(req(cpu=10), Usage(), caps=use(0, 20, 2), capacity=tight)
    assert any(r.startswith("global CPU cap") for r in d.reasons)
    assert any(r.startswith("global instance cap") for r in d.reasons)


def test_dedicated_needs_an_empty_layer_and_nothing_joins_it() -> None:
    assert decide(req(dedicated=True)).admitted
    d = decide(req(dedicated=True), use(100, 10, 1))
    assert not d.admitted and "dedicated" in d.reasons[0]
    d = decide(req(), use(100, 10, 1, dedicated=1))
    assert not d.admitted and d.reasons == ("layer L: held by a dedicated allocation.",)


def test_machine_memory_refuses_when_free_memory_is_short() -> None:
    d = decide(req(memory=300), machine=200)
    assert not d.admitted and d.reasons[0].startswith("machine memory: only 200 MB")
    assert decide(req(memory=300), machine=300).admitted
    assert not decide(req(memory=1), machine=float("nan")).admitted


def test_a_draining_pool_refuses_and_says_so() -> None:
    d = decide(req(), drained=(LKEY,))
    assert not d.admitted and d.drained and "draining" in d.reasons[0]


@pytest.mark.parametrize(("memory", "cpu", "dimension", "maximum"), [
    (1001, 1, "memory", "1000MB"), (1, 51, "CPU", "50%"),
])
def test_never_fits_is_bad_input_naming_dimension_and_maximum(memory, cpu, dimension, maximum) -> None:
    with pytest.raises(RequestTooLargeError) as info:
        never_fits(req(memory=memory, cpu=cpu), CHARGES, CAPACITY)
    assert dimension in str(info.value) and maximum in str(info.value)


def test_request_larger_than_global_cap_never_fits() -> None:
    small = {**CAPACITY, CKEY: Capacity(instances=10, memory_mb=500, cpu_units=90_000)}
    with pytest.raises(RequestTooLargeError, match="MAX_MEMORY_ALLOCATION_MB"):
        never_fits(req(memory=600), CHARGES, small)


@pytest.mark.parametrize("bad", [req(memory=-1), req(cpu=-0.5),
                                 Request(layer="L", category="c", memory_mb=1, cpu_units=1, duration_minutes=0)])
def test_negative_values_are_usage_errors(bad: Request) -> None:
    with pytest.raises(UsageError):
        never_fits(bad, CHARGES, CAPACITY)


# -- exact arithmetic: N default shares always fit a pool of N instances --------------------------

def test_the_default_share_of_core_integration_fits_six_times() -> None:
    pool = Pool(memory_mb=1024, cpu_percent=70, instances=6)
    memory, cpu = default_share(pool)
    assert (memory, cpu) == (170, 11666)  # 11.666 %, not 11.67 %
    capacity = Capacity(instances=6, memory_mb=1024, cpu_units=cpu_units(70), dedicated=True)
    used = Usage()
    for _ in range(6):
        assert admit(Request("L", "c", memory, cpu), CHARGES[:1], capacity={LKEY: capacity}, usage={LKEY: used},
                     taken={}).admitted
        used = used.plus(Usage(memory, cpu, 1, 0))


@settings(max_examples=300, deadline=None)
@given(memory=st.integers(1, 1 << 20), cpu=st.floats(0.001, 100, allow_nan=False), instances=st.integers(1, 500))
def test_property_n_default_shares_fit_a_pool_of_n(memory: int, cpu: float, instances: int) -> None:
    pool = Pool(memory_mb=memory, cpu_percent=round(cpu, 3), instances=instances)
    share_memory, share_cpu = default_share(pool)
    capacity = Capacity(instances=instances, memory_mb=memory, cpu_units=cpu_units(pool.cpu_percent), dedicated=True)
    total = Usage(share_memory * (instances - 1), share_cpu * (instances - 1), instances - 1, 0)
    last = admit(Request("L", "c", share_memory, share_cpu), CHARGES[:1], capacity={LKEY: capacity},
                 usage={LKEY: total}, taken={LKEY: set(range(instances - 1))})
    assert last.admitted, (pool, share_memory, share_cpu)


# -- hostile numbers never over-subscribe a pool ------------------------------------------------

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(1 << 70), 1 << 70))


@settings(max_examples=400, deadline=None)
@given(requests=st.lists(st.tuples(NUMBERS, NUMBERS), min_size=1, max_size=12))
def test_property_no_request_of_any_number_over_subscribes_a_pool(requests) -> None:
    """Whatever the numbers (NaN, infinities, negatives, huge), admission grants only
    what fits: the pool's sums never pass its capacity, and never go negative."""
    capacity = Capacity(instances=8, memory_mb=512, cpu_units=cpu_units(50), dedicated=True)
    used = Usage()
    for memory, cpu in requests:
        try:
            units = cpu_units(cpu) if isinstance(cpu, float) else int(cpu) * 1000
        except (ValueError, OverflowError):
            units = cpu  # NaN and infinities stay what they are
        request = Request("L", "c", memory, units)
        decision = admit(request, CHARGES[:1], capacity={LKEY: capacity}, usage={LKEY: used}, taken={})
        if decision.admitted:
            assert isinstance(memory, int) and memory >= 0 and isinstance(units, int) and units >= 0
            used = used.plus(Usage(memory, units, 1, 0))
        assert 0 <= used.memory_mb <= 512 and 0 <= used.cpu_units <= cpu_units(50) and used.instances <= 8


@settings(max_examples=200, deadline=None)
@given(memory=NUMBERS, cpu=NUMBERS, duration=NUMBERS)
def test_property_the_engine_refuses_non_finite_requests_as_bad_input(memory, cpu, duration, tmp_path_factory
                                                                      ) -> None:
    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine
    from netra_rm.ledger.file import FileLedger

    engine = Engine(load_config(env={}), FileLedger(tmp_path_factory.mktemp("l") / "ledger.json"), env={})
    try:
        request = engine.resolve_request("fast_feedback", "c", memory_mb=memory, cpu_percent=cpu,
                                         duration_minutes=duration)
    except UsageError:
        return
    assert all(math.isfinite(x) and x >= 0 for x in (request.memory_mb, request.cpu_units))
    assert math.isfinite(request.duration_minutes) and request.duration_minutes > 0
    assert request.memory_mb <= 512 and request.cpu_units <= 50_000


def test_an_unknown_capacity_is_never_fits() -> None:
    ghost = Charge(key="pool:x", kind="pool", name="x", scope="global", capacity=None, central=True, slots=True)
    d = admit(req(), [ghost], capacity={}, usage={}, taken={})
    assert not d.admitted and "unknown" in d.reasons[0]
