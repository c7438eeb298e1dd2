"""Right-sizing: what each layer and category really used, and what it should reserve.

A pure function over journal events: the release events of measured holders (``run``,
the pytest plugin) carry ``peak_memory_mb``, ``cpu_seconds`` and ``wall_seconds``. Per
layer and category it gives the number of runs, what they reserved, the p50/p95/max of
their peak memory and CPU seconds, and a suggested reservation: p95 plus 20 %, rounded
up to a step (memory: 32, 48, 64, 96, 128, 192, 256, 384, 512, ... MB; CPU: whole percents
up to 10 %, then multiples of 5 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The headroom over p95 that a suggestion adds.
HEADROOM = 1.2


@dataclass(frozen=True)
class Recommendation:
    """One layer and category: how it ran, and what it should reserve."""

    layer: str
    category: str
    runs: int
    reserved_memory_mb: int
    reserved_cpu_percent: float
    peak_memory_mb_p50: float
    peak_memory_mb_p95: float
    peak_memory_mb_max: float
    cpu_seconds_p50: float
    cpu_seconds_p95: float
    cpu_seconds_max: float
    cpu_percent_p95: float
    oom_kills: int
    suggested_memory_mb: int
    suggested_cpu_percent: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        """E.g. "core_integration / api_tests reserves 512 MB, uses p95 180 MB: reserve 256 MB"."""
        text = (f"{self.layer} / {self.category} reserves {self.reserved_memory_mb} MB, uses p95 "
                f"{self.peak_memory_mb_p95:.0f} MB: ")
        if self.suggested_memory_mb == self.reserved_memory_mb:
            text += "keep it"
        else:
            text += f"reserve {self.suggested_memory_mb} MB"
        if self.oom_kills:
            text += f" ({self.oom_kills} run(s) killed at the limit: the figures are the limit, not the need)"
        return text


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def memory_step(mb: float) -> int:
    """``mb`` rounded up to the next step: 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, ..."""
    step = 32
    while True:
        for candidate in (step, step * 3 // 2):
            if candidate >= mb:
                return candidate
        step *= 2


def cpu_step(percent: float) -> float:
    """``percent`` rounded up: whole percents up to 10, then multiples of 5 (at most 100)."""
    if percent <= 10:
        return float(max(1, math.ceil(percent)))
    return float(min(100, 5 * math.ceil(percent / 5)))


def recommend(events: Iterable[Mapping[str, Any]], *, cpus: int, layer: str | None = None) -> list[Recommendation]:
    """A recommendation per layer and category that has measured releases in ``events``
    (journal events, oldest first), sorted by layer and category. ``cpus``: the machine's
    CPUs, to turn CPU seconds per wall second into a percent of the machine."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for e in events:
        if e.get("event") != "release" or e.get("peak_memory_mb") is None:
            continue
        if layer is not None and e.get("layer") != layer:
            continue
        groups.setdefault((str(e.get("layer")), str(e.get("category"))), []).append(e)
    found = []
    for (layer_name, category), runs in sorted(groups.items()):
        peaks = [float(e["peak_memory_mb"]) for e in runs]
        cpu = [float(e.get("cpu_seconds") or 0.0) for e in runs]
        shares = [float(e.get("cpu_seconds") or 0.0) / max(float(e.get("wall_seconds") or 0.0), 1e-3) / cpus * 100
                  for e in runs]
        last = runs[-1]
        p95_memory = percentile(peaks, 95)
        p95_share = percentile(shares, 95)
        found.append(Recommendation(
            layer=layer_name, category=category, runs=len(runs),
            reserved_memory_mb=int(last.get("memory_mb") or 0),
            reserved_cpu_percent=float(last.get("cpu_percent") or 0.0),
            peak_memory_mb_p50=percentile(peaks, 50), peak_memory_mb_p95=p95_memory, peak_memory_mb_max=max(peaks),
            cpu_seconds_p50=percentile(cpu, 50), cpu_seconds_p95=percentile(cpu, 95), cpu_seconds_max=max(cpu),
            cpu_percent_p95=round(p95_share, 2), oom_kills=sum(1 for e in runs if e.get("oom_killed")),
            suggested_memory_mb=memory_step(p95_memory * HEADROOM),
            suggested_cpu_percent=cpu_step(p95_share * HEADROOM),
        ))
    return found
