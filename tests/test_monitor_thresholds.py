"""Levels, thresholds from configuration, and debounced alerts."""

from __future__ import annotations

import dataclasses
import math

import pytest

from netra_rm.errors import ConfigError
from netra_rm.monitor.sampler import SystemSample
from netra_rm.monitor.thresholds import (
    METRICS,
    AlertTracker,
    Level,
    Threshold,
    Thresholds,
    classify,
    format_duration,
)

BASE = SystemSample(
    timestamp=1_000.0,
    cpu_percent=10.0,
    cpu_percent_per_core=(10.0, 10.0),
    memory_total=16 * 2**30,
    memory_available=12 * 2**30,
    memory_used=4 * 2**30,
    memory_percent=25.0,
    swap_total=0,
    swap_used=0,
    swap_percent=0.0,
    load_average=(0.5, 0.5, 0.5),
    load_per_core=(0.25, 0.25, 0.25),
    disk_read_bytes_per_second=0.0,
    disk_write_bytes_per_second=0.0,
    net_sent_bytes_per_second=0.0,
    net_recv_bytes_per_second=0.0,
    process_count=100,
    interval_seconds=1.0,
)


def at(t: float, **changes: object) -> SystemSample:
    return dataclasses.replace(BASE, timestamp=t, **changes)


# -- Level and classify ------------------------------------------------------------------


def test_level_prints_as_a_word() -> None:
    assert str(Level.CRITICAL) == "critical"
    assert f"{Level.WARNING}" == "warning"
    assert f"[{Level.OK:>8}]" == "[      ok]"
    assert Level("warning") is Level.WARNING
    assert Level.OK.rank < Level.WARNING.rank < Level.CRITICAL.rank


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (0.0, Level.OK),
        (84.9, Level.OK),
        (85.0, Level.WARNING),
        (94.99, Level.WARNING),
        (95.0, Level.CRITICAL),
        (100.0, Level.CRITICAL),
        (None, Level.OK),
        (math.nan, Level.OK),
    ],
)
def test_classify_boundaries_use_greater_or_equal(value: float | None, level: Level) -> None:
    assert classify(value, Threshold(85, 95)) is level


def test_classify_tests_critical_first_when_bounds_are_equal() -> None:
    assert classify(90, Threshold(90, 90)) is Level.CRITICAL
    assert classify(89.9, Threshold(90, 90)) is Level.OK


@pytest.mark.parametrize(("warning", "critical"), [(95, 85), (-1, 5), (True, 5), ("80", 90), (math.inf, math.inf)])
def test_threshold_rejects_bad_bounds(warning: object, critical: object) -> None:
    with pytest.raises(ConfigError):
        Threshold(warning, critical)  # type: ignore[arg-type]


# -- Thresholds from configuration ----------------------------------------------------------


def test_defaults() -> None:
    t = Thresholds.from_mapping(None)
    assert t == Thresholds.from_mapping({}) == Thresholds()
    assert t.memory_percent == Threshold(85, 95)
    assert t.cpu_percent == Threshold(80, 90)
    assert t.load_per_core == Threshold(1.0, 5.0)
    assert t.processes == Threshold(2000, 4000)
    assert t.hold_seconds == 6


def test_from_mapping_overrides_what_is_given() -> None:
    t = Thresholds.from_mapping({"memory_percent": {"warning": 70}, "processes": {"warning": 10, "critical": 20},
                                 "hold_seconds": 2})
    assert t.memory_percent == Threshold(70, 95)
    assert t.processes == Threshold(10, 20)
    assert t.cpu_percent == Threshold(80, 90)
    assert t.hold_seconds == 2
    assert Thresholds.from_mapping(t.to_dict()) == t


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"memory": {"warning": 1}}, "thresholds"),
        ({"memory_percent": {"warn": 1}}, "thresholds.memory_percent"),
        ({"memory_percent": 90}, "thresholds.memory_percent"),
        ({"cpu_percent": {"warning": 95}}, "thresholds.cpu_percent"),  # above the default critical
        ({"cpu_percent": {"critical": "high"}}, "thresholds.cpu_percent.critical"),
        ({"hold_seconds": -1}, "thresholds.hold_seconds"),
    ],
)
def test_from_mapping_names_the_bad_key(mapping: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Thresholds.from_mapping(mapping)
    assert info.value.key == key
    assert isinstance(info.value, ValueError)


def test_levels_of_a_sample_use_load_per_core() -> None:
    t = Thresholds()
    assert set(t.levels(BASE)) == set(METRICS)
    assert all(level is Level.OK for level in t.levels(BASE).values())
    busy = at(1.0, memory_percent=96.0, cpu_percent=85.0, load_per_core=(1.5, 0.1, 0.1), process_count=4000)
    assert t.levels(busy) == {
        "memory_percent": Level.CRITICAL,
        "cpu_percent": Level.WARNING,
        "load_per_core": Level.WARNING,
        "processes": Level.CRITICAL,
    }


# -- AlertTracker ---------------------------------------------------------------------------


def test_a_single_spike_raises_nothing() -> None:
    tracker = AlertTracker(Thresholds(hold_seconds=6))
    assert tracker.observe(at(0.0)) == []
    assert tracker.observe(at(1.0, memory_percent=99.0)) == []
    assert tracker.observe(at(2.0)) == []
    assert tracker.observe(at(20.0)) == []


def test_a_held_level_raises_after_hold_seconds_and_clears_when_it_drops() -> None:
    tracker = AlertTracker(Thresholds(hold_seconds=6))
    for t in range(0, 6):
        assert tracker.observe(at(100.0 + t, memory_percent=96.1)) == [], t
    alerts = tracker.observe(at(106.0, memory_percent=96.1))
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.metric, alert.level, alert.value, alert.threshold, alert.since) == (
        "memory_percent", Level.CRITICAL, 96.1, 95.0, 100.0)
    assert alert.message == "memory at 96.1% (critical, >= 95%) for 6s"
    later = tracker.observe(at(108.0, memory_percent=96.1))
    assert later[0].message == "memory at 96.1% (critical, >= 95%) for 8s"
    assert later[0].since == 100.0
    assert tracker.observe(at(109.0, memory_percent=50.0)) == []
    assert tracker.current() == []


def test_falling_from_critical_to_warning_keeps_a_warning_that_has_held() -> None:
    tracker = AlertTracker(Thresholds(hold_seconds=5))
    tracker.observe(at(0.0, cpu_percent=95.0))
    assert tracker.observe(at(5.0, cpu_percent=95.0))[0].level is Level.CRITICAL
    alerts = tracker.observe(at(6.0, cpu_percent=85.0))
    assert [(a.level, a.since) for a in alerts] == [(Level.WARNING, 0.0)]
    assert alerts[0].message == "CPU at 85.0% (warning, >= 80%) for 6s"


def test_flapping_between_warning_and_critical_holds_as_warning() -> None:
    tracker = AlertTracker(Thresholds(hold_seconds=3))
    values = [91.0, 85.0, 92.0, 84.0]  # never 3 s critical in a row, always at least warning
    alerts = []
    for t, value in enumerate(values):
        alerts = tracker.observe(at(float(t), cpu_percent=value))
    assert [(a.level, a.since) for a in alerts] == [(Level.WARNING, 0.0)]


def test_an_injected_clock_overrides_sample_timestamps() -> None:
    now = [0.0]
    tracker = AlertTracker(Thresholds(hold_seconds=10), clock=lambda: now[0])
    tracker.observe(at(0.0, process_count=5000))
    now[0] = 9.9
    assert tracker.observe(at(1_000_000.0, process_count=5000)) == []
    now[0] = 10.0
    alerts = tracker.observe(at(0.0, process_count=5000))
    assert alerts[0].message == "processes at 5,000 (critical, >= 4000) for 10s"


def test_several_alerts_come_critical_first() -> None:
    tracker = AlertTracker(Thresholds(hold_seconds=0))
    alerts = tracker.observe(at(0.0, memory_percent=86.0, load_per_core=(6.0, 1.0, 1.0)))
    assert [(a.metric, a.level) for a in alerts] == [
        ("load_per_core", Level.CRITICAL), ("memory_percent", Level.WARNING)]
    assert alerts[0].message == "load per core at 6.00 (critical, >= 5) for 0s"
    assert alerts[1].to_dict()["level"] == "warning"


def test_observe_values_leaves_unknown_metrics_alone() -> None:
    tracker = AlertTracker(Thresholds(hold_seconds=1))
    tracker.observe_values({"memory_percent": 99.0}, now=0.0)
    tracker.observe_values({"memory_percent": None}, now=1.0)
    assert [a.metric for a in tracker.observe_values({"memory_percent": 99.0}, now=2.0)] == ["memory_percent"]
    tracker.reset()
    assert tracker.current() == []


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (8.7, "8s"), (65, "1m05s"), (3 * 3600 + 120, "3h02m"),
                                               (3 * 86400 + 3600, "3d01h"), (-5, "0s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
