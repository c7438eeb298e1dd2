"""Warning and critical levels for system metrics, and alerts that do not flap.

The scheme is glances': two bounds per metric, compared with ``>=``, critical tested
first; load is judged per core. :func:`classify` is the instantaneous verdict (what the
live view colours); :class:`AlertTracker` raises an :class:`Alert` only once a level has
held for ``hold_seconds``, so one spike raises nothing, and clears it as soon as the
level drops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Mapping

from netra_rm.errors import ConfigError
from netra_rm.monitor.sampler import SystemSample

__all__ = [
    "METRICS",
    "Alert",
    "AlertTracker",
    "Level",
    "Threshold",
    "Thresholds",
    "classify",
    "format_duration",
    "format_metric",
    "metric_values",
]


class Level(str, Enum):
    """How worrying a value is; prints as its word so it survives ``NO_COLOR``."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def rank(self) -> int:
        """0, 1, 2 for ok, warning, critical: for "the worst of these"."""
        return _RANK[self]


_RANK = {Level.OK: 0, Level.WARNING: 1, Level.CRITICAL: 2}


def _number(value: Any, *, key: str) -> float:
    """``value`` as a finite, non-negative float, or a :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        msg = f"must be a number, 0 or more, not {value!r}"
        raise ConfigError(msg, key=key)
    return float(value)


@dataclass(frozen=True)
class Threshold:
    """The values at or above which a metric is at warning and at critical level."""

    warning: float
    critical: float

    def __post_init__(self) -> None:
        _number(self.warning, key="threshold.warning")
        _number(self.critical, key="threshold.critical")
        if self.warning > self.critical:
            msg = f"warning ({self.warning:g}) must not be above critical ({self.critical:g})"
            raise ConfigError(msg, key="threshold")

    def bound(self, level: Level) -> float | None:
        """The value where ``level`` starts (``None`` for ok)."""
        if level is Level.CRITICAL:
            return self.critical
        if level is Level.WARNING:
            return self.warning
        return None


def classify(value: float | None, threshold: Threshold) -> Level:
    """The level of ``value``: critical if ``>= critical``, else warning if ``>= warning``.

    An unknown value (``None`` or NaN) is ok: a metric we cannot read raises no alarm.
    """
    if value is None or math.isnan(value):
        return Level.OK
    if value >= threshold.critical:
        return Level.CRITICAL
    if value >= threshold.warning:
        return Level.WARNING
    return Level.OK


#: The metrics that have thresholds, in display order.
METRICS: tuple[str, ...] = ("memory_percent", "cpu_percent", "load_per_core", "processes")

_DEFAULTS: dict[str, Threshold] = {
    "memory_percent": Threshold(85.0, 95.0),
    "cpu_percent": Threshold(80.0, 90.0),
    "load_per_core": Threshold(1.0, 5.0),
    "processes": Threshold(2000.0, 4000.0),
}
_DEFAULT_HOLD_SECONDS = 6.0


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of every metric, and how long a level must hold to raise an alert.

    Load is the 1-minute load average divided by the number of logical cores: a gate
    cares about now, and that average is already smoothed over a minute.
    """

    memory_percent: Threshold = field(default_factory=lambda: _DEFAULTS["memory_percent"])
    cpu_percent: Threshold = field(default_factory=lambda: _DEFAULTS["cpu_percent"])
    load_per_core: Threshold = field(default_factory=lambda: _DEFAULTS["load_per_core"])
    processes: Threshold = field(default_factory=lambda: _DEFAULTS["processes"])
    hold_seconds: float = _DEFAULT_HOLD_SECONDS

    def __post_init__(self) -> None:
        _number(self.hold_seconds, key="thresholds.hold_seconds")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from configuration, e.g. ``{"memory_percent": {"warning": 85,
        "critical": 95}, "hold_seconds": 6}``; anything left out keeps its default."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            msg = f"must be a mapping of metric names to warning/critical, not {type(mapping).__name__}"
            raise ConfigError(msg, key="thresholds")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            msg = f"unknown key {unknown[0]!r}; expected one of {', '.join(sorted(known))}"
            raise ConfigError(msg, key="thresholds")
        options: dict[str, Any] = {}
        for metric in METRICS:
            if metric in mapping:
                options[metric] = _threshold_from(metric, mapping[metric])
        if "hold_seconds" in mapping:
            options["hold_seconds"] = mapping["hold_seconds"]
        return cls(**options)

    def for_metric(self, metric: str) -> Threshold:
        """The threshold of one of :data:`METRICS`."""
        if metric not in METRICS:
            msg = f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}"
            raise KeyError(msg)
        threshold: Threshold = getattr(self, metric)
        return threshold

    def levels(self, sample: SystemSample) -> dict[str, Level]:
        """The instantaneous level of each metric in ``sample``."""
        values = metric_values(sample)
        return {metric: classify(values[metric], self.for_metric(metric)) for metric in METRICS}

    def to_dict(self) -> dict[str, Any]:
        """The configuration shape :meth:`from_mapping` reads."""
        out: dict[str, Any] = {
            metric: {"warning": self.for_metric(metric).warning, "critical": self.for_metric(metric).critical}
            for metric in METRICS
        }
        out["hold_seconds"] = self.hold_seconds
        return out


def _threshold_from(metric: str, raw: Any) -> Threshold:
    default = _DEFAULTS[metric]
    if not isinstance(raw, Mapping):
        msg = f"must be a mapping with warning and critical, not {raw!r}"
        raise ConfigError(msg, key=f"thresholds.{metric}")
    unknown = sorted(set(raw) - {"warning", "critical"})
    if unknown:
        msg = f"unknown key {unknown[0]!r}; expected warning, critical"
        raise ConfigError(msg, key=f"thresholds.{metric}")
    warning = _number(raw.get("warning", default.warning), key=f"thresholds.{metric}.warning")
    critical = _number(raw.get("critical", default.critical), key=f"thresholds.{metric}.critical")
    if warning > critical:
        msg = f"warning ({warning:g}) must not be above critical ({critical:g})"
        raise ConfigError(msg, key=f"thresholds.{metric}")
    return Threshold(warning, critical)


def metric_values(sample: SystemSample) -> dict[str, float]:
    """The value of each of :data:`METRICS` in ``sample``."""
    return {
        "memory_percent": sample.memory_percent,
        "cpu_percent": sample.cpu_percent,
        "load_per_core": sample.load_per_core[0],
        "processes": float(sample.process_count),
    }


_LABELS = {
    "memory_percent": "memory",
    "cpu_percent": "CPU",
    "load_per_core": "load per core",
    "processes": "processes",
}


def format_metric(metric: str, value: float) -> str:
    """A value as people read it: ``96.1%``, ``1.25``, ``4,120``."""
    if metric in ("memory_percent", "cpu_percent"):
        return f"{value:.1f}%"
    if metric == "load_per_core":
        return f"{value:.2f}"
    return f"{int(value):,}"


def _format_bound(metric: str, bound: float) -> str:
    suffix = "%" if metric in ("memory_percent", "cpu_percent") else ""
    return f"{bound:g}{suffix}"


def format_duration(seconds: float) -> str:
    """``8s``, ``2m05s``, ``1h03m``: short, for alert sentences and ages."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


@dataclass(frozen=True)
class Alert:
    """A metric that has stayed at warning or critical level for at least the hold time."""

    metric: str
    level: Level
    value: float  # the latest value
    threshold: float  # the bound the value is at or above
    since: float  # unix seconds when the metric reached this level (or above) and stayed
    at: float  # unix seconds of the latest value

    @property
    def duration(self) -> float:
        """Seconds the level has held."""
        return max(0.0, self.at - self.since)

    @property
    def message(self) -> str:
        """One sentence, e.g. ``memory at 96.1% (critical, >= 95%) for 8s``."""
        return (
            f"{_LABELS.get(self.metric, self.metric)} at {format_metric(self.metric, self.value)} "
            f"({self.level}, >= {_format_bound(self.metric, self.threshold)}) "
            f"for {format_duration(self.duration)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "metric": self.metric,
            "level": self.level.value,
            "value": round(self.value, 3),
            "threshold": self.threshold,
            "since": round(self.since, 3),
            "duration_seconds": round(self.duration, 3),
            "message": self.message,
        }


class AlertTracker:
    """Debounces levels into alerts, one metric at a time (not thread-safe).

    For each level it remembers since when the metric has been at that level or above;
    the alert is the highest level that has held for ``hold_seconds``. So a metric that
    falls from critical to warning turns into a warning alert at once if it has been at
    warning or above long enough, and an ok value clears the metric's alert at once.

    Time comes from each sample's ``timestamp``, or from ``clock`` when one is given.
    """

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self._clock = clock
        # metric -> level -> since (unix seconds); only warning and critical are tracked
        self._since: dict[str, dict[Level, float]] = {metric: {} for metric in METRICS}
        self._alerts: dict[str, Alert] = {}

    def observe(self, sample: SystemSample) -> list[Alert]:
        """Take one sample into account; returns the alerts now current."""
        now = self._clock() if self._clock is not None else sample.timestamp
        return self.observe_values(metric_values(sample), now=now)

    def observe_values(self, values: Mapping[str, float | None], *, now: float) -> list[Alert]:
        """Like :meth:`observe`, from plain ``{metric: value}`` readings taken at ``now``.

        A metric missing from ``values`` (or ``None``) keeps its state unchanged.
        """
        hold = self.thresholds.hold_seconds
        for metric in METRICS:
            value = values.get(metric)
            if value is None or math.isnan(value):
                continue
            threshold = self.thresholds.for_metric(metric)
            level = classify(value, threshold)
            since = self._since[metric]
            for tracked in (Level.WARNING, Level.CRITICAL):
                if level.rank >= tracked.rank:
                    since.setdefault(tracked, now)
                else:
                    since.pop(tracked, None)
            alert: Alert | None = None
            for tracked in (Level.CRITICAL, Level.WARNING):
                start = since.get(tracked)
                if start is not None and now - start >= hold:
                    bound = threshold.bound(tracked)
                    assert bound is not None
                    alert = Alert(metric, tracked, float(value), bound, start, now)
                    break
            if alert is None:
                self._alerts.pop(metric, None)
            else:
                self._alerts[metric] = alert
        return self.current()

    def current(self) -> list[Alert]:
        """The current alerts, critical first, then in :data:`METRICS` order."""
        alerts = [self._alerts[m] for m in METRICS if m in self._alerts]
        return sorted(alerts, key=lambda a: -a.level.rank)

    def reset(self) -> None:
        """Forget all history and alerts."""
        for since in self._since.values():
            since.clear()
        self._alerts.clear()
