"""The Python API from the seed: ``ResourceManagementAgent`` and its helpers.

A thin object over the engine. It owns the allocations it makes (they are released when
the agent is closed or its ``with`` block ends) and, when asked, a background sampler.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from netra_rm import numbers
from netra_rm.config.model import Config
from netra_rm.core.engine import Engine
from netra_rm.core.model import ResourceRequirements
from netra_rm.errors import ServiceUnavailableError


class ResourceManagementAgent:
    """Service readiness and layered resource pools for one process.

    Use it as a context manager: on exit it stops monitoring and releases the
    allocations it made.

    Example::

        with create_resource_manager() as rm:
            ok, missing = rm.ensure_layer_services("core_integration")
            allocation_id = rm.allocate_resources("core_integration", "database_tests",
                                                  ResourceRequirements(min_memory_mb=256))
    """

    def __init__(self, *, config: Config | str | None = None, ledger: str | None = None,
                 env: Mapping[str, str] | None = None, enable_monitoring: bool = True,
                 monitor_interval: float = 2.0, history: int = 300, metrics_source: Any = None) -> None:
        if isinstance(config, Config):
            self.engine = Engine.from_options(config=config, ledger=ledger, env=env)
        else:
            self.engine = Engine.from_options(config_path=config, ledger=ledger, env=env)
        self.config = self.engine.config
        self._owned: list[str] = []
        self._lock = threading.Lock()
        self._monitor: Any = None
        self._keeper: Any = None  # renews the leases of owned allocations on a shared ledger
        if enable_monitoring:
            self.start_monitoring(interval=monitor_interval, history=history, source=metrics_source)

    # -- lifecycle -----------------------------------------------------------------------

    def start_monitoring(self, *, interval: float = 2.0, history: int = 300, source: Any = None) -> None:
        """Sample system metrics in a background thread, keeping a bounded history.
        ``source`` stands in for the ``psutil`` module (figures of your own, or a test's)."""
        if self._monitor is not None:
            return
        from netra_rm.monitor.background import MonitorThread
        from netra_rm.monitor.sampler import Sampler

        interval = float(numbers.finite("monitor_interval", interval, numbers.SAMPLE_SECONDS))
        sampler = Sampler(source=source) if source is not None else None
        self._monitor = MonitorThread(interval=interval, history_size=history, sampler=sampler)
        self._monitor.start()

    def stop_monitoring(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    def close(self) -> None:
        """Stop monitoring and release every allocation this agent made."""
        self.stop_monitoring()
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        with self._lock:
            owned, self._owned = self._owned, []
        if owned:
            self.engine.release(owned)

    def __enter__(self) -> ResourceManagementAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- services ------------------------------------------------------------------------

    def ensure_layer_services(self, layer_name: str, *, raise_on_missing: bool = False,
                              timeout_seconds: float = 0.0, start_missing: bool = False) -> tuple[bool, list[str]]:
        """Are the layer's services (and what they depend on) healthy?

        Returns ``(True, [])`` or ``(False, missing)``; with ``raise_on_missing`` raises
        :class:`ServiceUnavailableError` naming the root cause instead. With
        ``start_missing`` the missing ones are first started with their configured start
        commands, as ``netra-rm up LAYER`` does, within ``timeout_seconds`` (60 when 0).
        """
        timeout_seconds = float(numbers.finite("timeout_seconds", timeout_seconds, numbers.WAIT_SECONDS))
        if start_missing:
            from netra_rm.core.startup import DEFAULT_UP_TIMEOUT, bring_up

            outcome = bring_up(self.engine, [layer_name], timeout=timeout_seconds or DEFAULT_UP_TIMEOUT)
            failure = outcome.error()
            if failure is not None and raise_on_missing:
                raise failure
            return (outcome.ok, outcome.missing)
        from netra_rm.core.readiness import check_layer, missing_details

        verdict = check_layer(self.engine, layer_name, timeout=timeout_seconds)
        if verdict.missing and raise_on_missing:
            root = missing_details(verdict)[0]
            name = root.get("name") or verdict.missing[0]
            raise ServiceUnavailableError(name, root.get("error") or root.get("status", "unavailable"),
                                          root.get("remediation") or [])
        return (not verdict.missing, list(verdict.missing))

    def get_service_status(self) -> dict[str, Any]:
        """Every configured service's health, with ``healthy_services`` and ``total_services``;
        per service also ``started_by_netra_rm`` and ``restart_count`` (see ``netra-rm up``)."""
        return service_status(self.engine)

    # -- allocations ---------------------------------------------------------------------

    def allocate_resources(self, layer_name: str, category_name: str,
                           requirements: ResourceRequirements | None = None,
                           duration_minutes: float = 30) -> str | None:
        """Admit an allocation owned by this process; its id, or None when there is no room.

        The services the ``requires_*`` flags name (and what they depend on) must be
        healthy first: else :class:`ServiceUnavailableError` is raised, naming the root
        cause with its remediation steps, and nothing is allocated. A number that is not
        finite or not in its range raises :class:`~netra_rm.errors.UsageError` (a
        ``ValueError``)."""
        from netra_rm.core.readiness import require_services

        numbers.finite("duration_minutes", duration_minutes, numbers.DURATION_MINUTES)
        if requirements is not None:
            for name, value, rng in (("min_memory_mb", requirements.min_memory_mb, numbers.MEMORY_MB),
                                     ("min_cpu_percent", requirements.min_cpu_percent, numbers.CPU_PERCENT)):
                if value is not None:
                    numbers.finite(name, value, rng)
        request = self.engine.request_from_requirements(layer_name, category_name, requirements,
                                                        duration_minutes)
        require_services(self.engine, request.requires)
        allocation, _ = self.engine.try_allocate(request, self.engine.current_process_owner())
        if allocation is None:
            return None
        with self._lock:
            self._owned.append(allocation.id)
            if allocation.lease_expires_at is not None:  # a shared ledger: keep the lease alive
                if self._keeper is None:
                    from netra_rm.core.lease import LeaseKeeper

                    self._keeper = LeaseKeeper(self.engine)
                self._keeper.add(allocation.id)
        return allocation.id

    def release_resources(self, allocation_id: str) -> bool:
        """Release one allocation; False when it was not found."""
        result = self.engine.release([allocation_id])
        with self._lock:
            if allocation_id in self._owned:
                self._owned.remove(allocation_id)
            if self._keeper is not None:
                self._keeper.discard(allocation_id)
        return bool(result.released)

    def get_resource_status(self) -> dict[str, Any]:
        """Pools, active allocations, global limits and the latest system metrics (right
        after the agent starts, it waits for the first sample: half a second at most)."""
        sample = self._latest_sample()
        return self.engine.resource_status(system_metrics=sample.to_dict() if sample is not None else None)

    def get_status_report(self) -> dict[str, Any]:
        """Everything ``netra-rm status --json`` prints, built the same way: the services
        checked, the machine sampled, the pools, allocations and conflicts."""
        from netra_rm.results import status_report

        return status_report(self.engine).json_document()

    def resolve_resource_conflicts(self) -> list[str]:
        """What is wrong now, one sentence each (and reclaims what can be reclaimed)."""
        from netra_rm.core.conflicts import find_conflicts

        return find_conflicts(self.engine, sample=self._latest_sample())

    def _latest_sample(self) -> Any:
        """The monitor's newest sample; before its first, wait for it (None without monitoring)."""
        if self._monitor is None:
            return None
        return self._monitor.latest() or self._monitor.wait_for_sample(self._monitor.first_after + 1.0)


def service_summary(services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The contract's service-status dict from per-service results."""
    healthy = sum(1 for s in services.values() if s.get("status") == "healthy")
    return {"services": dict(services), "healthy_services": healthy, "total_services": len(services)}


def service_status(engine: Engine) -> dict[str, Any]:
    """Check every configured service: the contract's service-status dict, each service
    also with ``started_by_netra_rm`` and ``restart_count`` (``get_service_status()`` and
    ``netra-rm status --json`` alike); with Compose discovery on, ``discovery`` says what
    it found (its warnings too: a compose project that cannot be read is one)."""
    from netra_rm.core.readiness import check_service_results, effective_services
    from netra_rm.core.startup import start_info

    results = check_service_results(engine, None)
    started = start_info(engine)
    not_started = {"started_by_netra_rm": False, "restart_count": 0}
    summary = service_summary({name: {**r.to_dict(), **started.get(name, not_started)}
                               for name, r in results.items()})
    _, found = effective_services(engine, announce=False)
    if found is not None:
        summary["discovery"] = found.to_dict()
    return summary


def create_resource_manager(enable_monitoring: bool = True, **options: Any) -> ResourceManagementAgent:
    """A :class:`ResourceManagementAgent`; ``options`` are its keyword arguments
    (``config``, ``ledger``, ``env``, ``monitor_interval``, ``history``, ``metrics_source``)."""
    return ResourceManagementAgent(enable_monitoring=enable_monitoring, **options)


def ensure_layer_resources_available(rm: ResourceManagementAgent, layer: str, timeout_seconds: float = 120,
                                     *, start_missing: bool = False, **options: Any) -> bool:
    """Wait up to ``timeout_seconds`` for the layer's services and pool room; True when ready.

    With ``start_missing`` the missing services are first started (``netra-rm up LAYER``)
    and the pool is waited for in the time that is left.
    """
    import time

    from netra_rm.core.readiness import check_layer

    timeout_seconds = float(numbers.finite("timeout_seconds", timeout_seconds, numbers.WAIT_SECONDS))
    began = time.monotonic()
    if start_missing:
        from netra_rm.core.startup import bring_up

        if not bring_up(rm.engine, [layer], timeout=timeout_seconds).ok:
            return False
    left = max(0.0, timeout_seconds - (time.monotonic() - began))
    return check_layer(rm.engine, layer, timeout=left, **options).ready
