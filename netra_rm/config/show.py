"""The effective configuration as plain data, with every secret masked."""

from __future__ import annotations

from typing import Any

from netra_rm.config.model import Config
from netra_rm.redact import mask_text, mask_url


def effective_config(config: Config) -> dict[str, Any]:
    """What netra-rm will use, after defaults, the file and the environment."""
    from netra_rm.services.cmdline import mask_command, secrets_of_all

    secrets = secrets_of_all(config.services.values())

    def masked(text: str) -> str:
        return mask_command(mask_text(text), secrets)

    return {
        "source": config.source,
        "layers": {
            name: {"description": layer.description, "services": list(layer.services),
                   "pool": {"memory_mb": layer.pool.memory_mb, "cpu_percent": layer.pool.cpu_percent,
                            "instances": layer.pool.instances, "scope": layer.pool.scope},
                   "default_memory_mb": layer.default_memory_mb, "default_cpu_percent": layer.default_cpu_percent,
                   **({"uses": list(layer.uses)} if layer.uses else {})}
            for name, layer in config.layers.items()
        },
        **({"pools": {name: {k: v for k, v in {
            "instances": pool.instances, "scope": pool.scope, "memory_mb": pool.memory_mb,
            "cpu_percent": pool.cpu_percent, "description": pool.description or None}.items() if v is not None}
            for name, pool in config.pools.items()}} if config.pools else {}),
        "services": {
            name: {k: v for k, v in {
                "kind": s.kind, "url": mask_url(s.url), "url_env": s.url_env, "depends_on": list(s.depends_on),
                "health_path": s.health_path, "expect_status": list(s.expect_status) or None,
                "json_field": s.json_field, "json_value": s.json_value,
                "connect_timeout": s.connect_timeout, "timeout": s.timeout,
                "start": [masked(a) for a in s.start] or None, "stop": [masked(a) for a in s.stop] or None,
                "shell": s.shell or None, "workdir": s.workdir,
                "environment": {k: masked(v) for k, v in s.environment.items()} or None}.items()
                if v is not None}
            for name, s in config.services.items()
        },
        "limits": {"max_memory_mb": config.limits.max_memory_mb, "max_cpu_percent": config.limits.max_cpu_percent,
                   "max_parallel_instances": config.limits.max_parallel_instances,
                   "sources": dict(config.limits.sources)},
        "machine": {"check_memory": config.machine.check_memory,
                    "memory_reserve_mb": config.machine.memory_reserve_mb},
        "checks": {"connect_timeout": config.checks.connect_timeout, "timeout": config.checks.timeout,
                   "deadline": config.checks.deadline},
        "thresholds": config.thresholds,
        "allocations": {"default_duration_minutes": config.default_duration_minutes,
                        "lease_seconds": config.lease_seconds},
        **({"discovery": config.raw["discovery"]} if config.raw.get("discovery") else {}),
    }
