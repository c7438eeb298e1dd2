"""The one backoff helper: the pauses each retry loop waits between two tries."""

from __future__ import annotations

from itertools import islice

from netra_rm.backoff import LAYER_READY, PROCESS_EXIT, SERVICE_STATE, START_LOCK, Backoff


def test_pauses_grow_by_the_factor_up_to_the_ceiling() -> None:
    assert list(islice(Backoff(first=0.25, most=5.0).pauses(), 7)) == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert list(islice(Backoff(first=2.0, most=1.0).pauses(), 2)) == [1.0, 1.0]  # never above the ceiling


def test_each_loop_keeps_the_figures_it_had() -> None:
    assert [round(p, 4) for p in islice(SERVICE_STATE.pauses(), 8)] == [0.05, 0.075, 0.1125, 0.1688, 0.2531,
                                                                         0.3797, 0.5, 0.5]
    assert list(islice(PROCESS_EXIT.pauses(), 6)) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.2]
    assert list(islice(START_LOCK.pauses(), 6)) == [0.02, 0.04, 0.08, 0.16, 0.25, 0.25]


def test_jitter_shortens_each_pause_by_up_to_its_fraction_and_the_growth_stays() -> None:
    pauses = list(islice(LAYER_READY.pauses(), 2000))
    plain = list(islice(Backoff(LAYER_READY.first, LAYER_READY.most).pauses(), 2000))
    assert all(0.5 * p <= j <= p for j, p in zip(pauses, plain))
    assert len(set(pauses[-100:])) > 50  # at random, not one fixed fraction
