"""Right-sizing from measured releases: the pure function, and `netra-rm recommend`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netra_rm.core.recommend import cpu_step, memory_step, percentile, recommend


def release(layer: str, category: str, peak: float, *, memory: int = 512, cpu: float = 10.0, cpu_seconds: float = 1.0,
            wall: float = 10.0, oom: bool = False) -> dict:
    return {"event": "release", "layer": layer, "category": category, "memory_mb": memory, "cpu_percent": cpu,
            "peak_memory_mb": peak, "cpu_seconds": cpu_seconds, "wall_seconds": wall, "oom_killed": oom}


def test_the_example_of_the_issue() -> None:
    events = [release("core_integration", "api_tests", peak) for peak in [120.0] * 10 + [150.0] * 9 + [180.0]]
    (found,) = recommend(events, cpus=2)
    assert found.runs == 20 and found.reserved_memory_mb == 512
    assert (found.peak_memory_mb_p50, found.peak_memory_mb_p95, found.peak_memory_mb_max) == (120.0, 150.0, 180.0)
    assert found.suggested_memory_mb == 192  # 150 * 1.2 = 180, rounded up to a step
    events.append(release("core_integration", "api_tests", 180.0))
    events += [release("core_integration", "api_tests", 180.0) for _ in range(5)]
    (found,) = recommend(events, cpus=2)
    assert found.sentence() == "core_integration / api_tests reserves 512 MB, uses p95 180 MB: reserve 256 MB"


def test_groups_filters_and_skips_unmeasured_events() -> None:
    events = [release("a", "x", 100), release("b", "y", 50), {"event": "release", "layer": "a", "category": "x",
                                                               "memory_mb": 64}, {"event": "grant", "layer": "a"}]
    assert [(r.layer, r.category, r.runs) for r in recommend(events, cpus=1)] == [("a", "x", 1), ("b", "y", 1)]
    assert [r.layer for r in recommend(events, cpus=1, layer="b")] == ["b"]
    assert recommend([], cpus=1) == []


def test_cpu_share_and_oom_kills() -> None:
    runs = [release("a", "x", 100, cpu_seconds=10, wall=10, oom=i == 0) for i in range(3)]  # one core of two: 50 %
    (found,) = recommend(runs, cpus=2)
    assert found.cpu_percent_p95 == 50.0 and found.suggested_cpu_percent == 60.0
    assert found.oom_kills == 1 and "killed at the limit" in found.sentence()


@pytest.mark.parametrize("mb, step", [(1, 32), (32, 32), (33, 48), (49, 64), (65, 96), (180, 192), (216, 256),
                                      (300, 384), (600, 768), (1100, 1536), (5000, 6144)])
def test_memory_steps(mb: float, step: int) -> None:
    assert memory_step(mb) == step


def test_cpu_steps_and_percentiles() -> None:
    assert (cpu_step(0.2), cpu_step(7.5), cpu_step(11), cpu_step(99), cpu_step(300)) == (1, 8, 15, 100, 100)
    assert percentile([5, 1, 3], 50) == 3 and percentile([1, 2, 3, 4], 95) == 4 and percentile([7], 1) == 7


def test_recommend_command(cli, small_config: Path) -> None:
    base = ("--config", str(small_config))
    assert "nothing measured yet" in cli(*base, "recommend").stderr
    for _ in range(2):
        assert cli(*base, "run", "--layer", "tiny", "--category", "unit", "--memory-mb", "100", "--", sys.executable,
                   "-c", "pass").code == 0
    data = cli(*base, "recommend", "--json").json()
    assert data["schema_version"] == 1
    (found,) = data["recommendations"]
    assert (found["layer"], found["category"], found["runs"], found["reserved_memory_mb"]) == ("tiny", "unit", 2, 100)
    assert 0 < found["peak_memory_mb_p95"] < 100 and found["suggested_memory_mb"] >= found["peak_memory_mb_p95"]
    human = cli(*base, "recommend", "--layer", "tiny")
    assert human.code == 0 and "tiny / unit reserves 100 MB, uses p95" in human.stdout
    quiet = cli(*base, "recommend", "-q")
    assert quiet.stdout.startswith("tiny / unit reserves 100 MB, uses p95") and quiet.stdout.count("\n") == 1
    unknown = cli(*base, "recommend", "--layer", "nope")
    assert unknown.code == 2 and "unknown layer" in unknown.stderr
