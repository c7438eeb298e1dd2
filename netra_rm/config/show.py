"""The effective configuration as plain data, with every secret masked.

What ``netra-rm config show`` prints is itself a valid configuration file (``config
validate`` accepts it, ``--config`` loads it): where a value came from (the file, an
environment variable) is said in comments above it, not in keys of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from netra_rm.config.model import Config
from netra_rm.redact import mask_text, mask_url


def effective_config(config: Config) -> dict[str, Any]:
    """What netra-rm will use, after defaults, the file and the environment."""
    from netra_rm.config.commands import mask_command, secrets_of_all

    secrets = secrets_of_all(config.services.values())

    def masked(text: str) -> str:
        return mask_command(mask_text(text), secrets)

    from netra_rm.config.load import load_config

    # a default layer, pool or service the configuration removed stays removed when the
    # output is loaded again (the defaults are merged in by name)
    defaults = load_config(env={})
    removed = {section: {name: None for name in getattr(defaults, section) if name not in getattr(config, section)}
               for section in ("layers", "services", "pools")}
    shown = _shown(config, masked)
    for section, names in removed.items():
        if names:
            shown[section] = {**shown.get(section, {}), **names}
    return shown


def _shown(config: Config, masked: Callable[[str], str]) -> dict[str, Any]:
    return {
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
                   "max_parallel_instances": config.limits.max_parallel_instances},
        "machine": {"check_memory": config.machine.check_memory,
                    "memory_reserve_mb": config.machine.memory_reserve_mb},
        "checks": {"connect_timeout": config.checks.connect_timeout, "timeout": config.checks.timeout,
                   "deadline": config.checks.deadline},
        "thresholds": config.thresholds,
        "allocations": {"default_duration_minutes": config.default_duration_minutes,
                        "lease_seconds": config.lease_seconds},
        **({"discovery": config.raw["discovery"]} if config.raw.get("discovery") else {}),
    }


def origins(config: Config, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where values came from besides the configuration file: key path -> the variable."""
    from netra_rm.config import env as envmod

    found = {f"limits.{key}": source for key, source in config.limits.sources.items() if source != "config"}
    for name, spec in config.services.items():
        if spec.url_env and envmod.get(spec.url_env, env) is not None:
            found[f"services.{name}.url"] = spec.url_env
    return found


def render_yaml(config: Config, env: Mapping[str, str] | None = None) -> str:
    """The effective configuration as a YAML file that ``config validate`` accepts, its
    origins in comments."""
    import yaml

    lines = [f"# netra-rm configuration in effect, from {config.source}; passwords show as ***.",
             "# Saved to a file, it is a configuration of its own: netra-rm config validate FILE."]
    found = origins(config, env)
    if found:
        lines.append("# Values from the environment:")
        lines += [f"#   {key}: from {variable}" for key, variable in sorted(found.items())]
    body = yaml.safe_dump(effective_config(config), sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n" + body
