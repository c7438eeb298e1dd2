"""Load, merge and validate the configuration; apply environment overrides.

Every problem is a :class:`~netra_rm.errors.ConfigError` naming the file, the key path
and what is wrong, so ``netra-rm`` can exit 2 with one clear sentence.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import stat
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from netra_rm import numbers
from netra_rm.config import env as envmod
from netra_rm.config.graph import find_cycle
from netra_rm.config.kinds import kind_names
from netra_rm.config.model import (
    POOL_SCOPES,
    Categories,
    CategoryDefaults,
    CheckSettings,
    Config,
    Layer,
    Limits,
    MachineSettings,
    Pool,
    SharedPool,
)
from netra_rm.config.service import AddressOrigin, ServiceSpec
from netra_rm.errors import ConfigError
from netra_rm.redact import normalized_url

SCHEMA_VERSION = 1
DEFAULT_CONFIG_NAME = "netra-rm.yaml"
BUILTIN_SOURCE = "<built-in netra-rm.yaml>"
#: The largest configuration file netra-rm reads (1 MiB).
MAX_CONFIG_BYTES = 1024 * 1024
#: The most aliases (``*name``) a configuration may use, and the most values they may add
#: once expanded: a few nested aliases can otherwise stand for billions of values.
MAX_ALIASES = 1000
MAX_ALIAS_VALUES = 100_000

_TOP_KEYS = {"version", "layers", "services", "limits", "machine", "checks", "thresholds", "allocations", "pools",
             "discovery", "queue", "categories"}
_QUEUE_KEYS = {"aging_seconds"}
_INSTANCE_KEYS = {"name", "properties"}
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_LAYER_KEYS = {"description", "services", "pool", "default_memory_mb", "default_cpu_percent", "uses", "enforce"}
_POOL_KEYS = {"memory_mb", "cpu_percent", "instances", "scope"}
_POOL_REQUIRED = ("cpu_percent", "instances", "memory_mb")
_SHARED_POOL_KEYS = {"instances", "scope", "memory_mb", "cpu_percent", "description"}
_SERVICE_KEYS = {"kind", "url", "url_env", "depends_on", "health_path", "expect_status", "json_field",
                 "json_value", "connect_timeout", "timeout", "description",
                 "start", "stop", "shell", "workdir", "environment"}
_LIMIT_KEYS = {"max_memory_mb", "max_cpu_percent", "max_parallel_instances"}
_MACHINE_KEYS = {"check_memory", "memory_reserve_mb", "measure"}
_CATEGORY_KEYS = {"memory_mb", "cpu_percent", "duration_minutes", "priority", "description"}
_CHECK_KEYS = {"connect_timeout", "timeout", "deadline"}
_THRESHOLD_METRICS = {"memory_percent", "cpu_percent", "load_per_core", "processes"}
_ALLOCATION_KEYS = {"default_duration_minutes", "lease_seconds"}
_MERGED_BY_NAME = ("layers", "services", "pools")
_DISCOVERY_KEYS = {"compose"}
_COMPOSE_KEYS = {"file", "project", "services"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# what only a shell understands: operators, redirections, variables, command substitution
_SHELL_SYNTAX = re.compile(r"[|&;<>`$]|\(|\)")


def default_config_text() -> str:
    """The configuration that ships inside the package."""
    return (Path(__file__).resolve().parent.parent / "defaults" / DEFAULT_CONFIG_NAME).read_text("utf-8")


def _parse_yaml(text: str, source: str) -> tuple[Any, bool]:
    """Parse YAML text, through a cache keyed by the whole text (see :mod:`.cache`); the
    data and whether it came from the cache. Nothing is cached here: :func:`load_config`
    stores what it parsed once the configuration passed validation."""
    from netra_rm.config import cache

    found = cache.lookup(source, text)
    if found is not cache.MISS:
        return found, True
    return _parse_yaml_uncached(text, source), False


def _parse_yaml_uncached(text: str, source: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML{where}: {problem}.", path=source,
                          remediation=["Fix the YAML syntax, then run `netra-rm config validate "
                                       f"{source}`."]) from None
    finally:
        loader.dispose()


def _check_aliases(root: Any, source: str) -> None:
    """Refuse a document whose aliases are too many, refer to themselves, or expand it by
    more than :data:`MAX_ALIAS_VALUES` values (a "billion laughs"). Linear in the
    document: each node's expanded size is computed once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    aliases = 0
    distinct = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            distinct += 1
            if sizes[key] - distinct > MAX_ALIAS_VALUES:
                raise ConfigError(f"its aliases expand it by more than {MAX_ALIAS_VALUES} values; netra-rm "
                                  "refuses such files (a \"billion laughs\").", path=source,
                                  remediation=["Write the values out, or use fewer nested aliases."])
            continue
        if key in sizes:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ConfigError(f"it uses more than {MAX_ALIASES} aliases (*name); netra-rm refuses such "
                                  "files.", path=source, remediation=["Write the values out instead."])
            continue
        if key in on_path:
            raise ConfigError("an alias refers to a value that contains it; netra-rm refuses such files.",
                              path=source, remediation=["Remove the alias that refers to its own anchor."])
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)


def _children(node: Any) -> list[Any]:
    value = node.value
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):  # a mapping: (key, value) pairs
            return [part for pair in value for part in pair]
        return value
    return []


def _read_text(path: str | Path) -> str:
    """The text of a configuration file: a regular file of at most :data:`MAX_CONFIG_BYTES`.
    A FIFO, a device or a directory is refused at once (never read, never waited on)."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError("the configuration file does not exist.", path=source,
                          remediation=["Check the path given to --config or NETRA_RM_CONFIG."]) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file ({exc.__class__.__name__}: "
                          f"{exc.strerror or exc}).", path=source) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise ConfigError(f"is {kind}, not a configuration file; netra-rm reads regular files only.",
                              path=source, remediation=["Give --config (or NETRA_RM_CONFIG) the path of a "
                                                        "YAML file."])
        data = b""
        if st.st_size <= MAX_CONFIG_BYTES:
            chunks = []
            left = MAX_CONFIG_BYTES + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
        if st.st_size > MAX_CONFIG_BYTES or len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"is {max(st.st_size, len(data))} bytes; netra-rm reads configuration files of at "
                              f"most {MAX_CONFIG_BYTES // 1024} KiB.", path=source,
                              remediation=["Give --config the path of the YAML configuration file."])
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file ({exc.__class__.__name__}: "
                          f"{exc.strerror or exc}).", path=source) from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read the configuration file (it is not UTF-8 text: {exc.reason} at byte "
                          f"{exc.start}).", path=source) from None


def _as_mapping(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {_type_name(data)}.", path=source)
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse one configuration file into a mapping (not yet validated)."""
    source = str(path)
    return _as_mapping(_parse_yaml(_read_text(path), source)[0], source)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay a user file on the defaults.

    ``layers``, ``services`` and ``pools`` merge by name (a named entry replaces the
    default one of that name, ``null`` removes it); other sections merge key by key.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if key in _MERGED_BY_NAME and isinstance(value, dict) and isinstance(merged.get(key), dict):
            section = merged[key]
            for name, entry in value.items():
                if entry is None:
                    section.pop(name, None)
                else:
                    section[name] = copy.deepcopy(entry)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """The effective configuration: defaults, then the file at ``path`` (or
    ``NETRA_RM_CONFIG``), then environment overrides. Parsed files are cached only once
    the whole configuration passed validation."""
    path = path or envmod.config_path(env)
    parsed: list[tuple[str, str, Any, bool]] = []  # (source, text, data, from the cache)
    default_text = default_config_text()
    defaults, hit = _parse_yaml(default_text, BUILTIN_SOURCE)
    parsed.append((BUILTIN_SOURCE, default_text, defaults, hit))
    if path:
        source = str(path)
        text = _read_text(path)
        data, hit = _parse_yaml(text, source)
        user = _as_mapping(data, source)
        parsed.append((source, text, data, hit))
        raw = merge(defaults, user)
        _check_keys(user, _TOP_KEYS, "", source)
        section = user.get("services")
        named: dict[str, Any] = section if isinstance(section, dict) else {}
        builtin = frozenset(name for name in (raw.get("services") or {}) if name not in named)
    else:
        source = BUILTIN_SOURCE
        raw = defaults
        builtin = None
    config = build_config(raw, source=source, env=env, builtin_services=builtin)
    from netra_rm.config import cache

    for name, text, data, hit in parsed:
        if not hit:
            cache.store(name, text, data)
    return config


def validate_file(path: str | Path) -> Config:
    """Check one file as ``netra-rm config validate`` does (environment not applied)."""
    return load_config(path, env={})


def build_config(raw: Mapping[str, Any], *, source: str, env: Mapping[str, str] | None = None,
                 builtin_services: Collection[str] | None = None) -> Config:
    """Validate a merged mapping and turn it into a :class:`Config`.

    ``builtin_services`` names the services whose entry came from the built-in defaults
    rather than from ``source`` (all of them when ``source`` is the built-in file)."""
    v = _Validator(source)
    v.keys(raw, _TOP_KEYS, "")
    version = raw.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        v.fail("version", f"unsupported configuration version {version!r}; this netra-rm reads "
               f"version {SCHEMA_VERSION}.")

    checks_raw = v.mapping(raw.get("checks", {}), "checks")
    v.keys(checks_raw, _CHECK_KEYS, "checks")
    checks = CheckSettings(
        connect_timeout=v.number(checks_raw.get("connect_timeout", 1.0), "checks.connect_timeout",
                                 numbers.NETWORK_SECONDS),
        timeout=v.number(checks_raw.get("timeout", 2.0), "checks.timeout", numbers.NETWORK_SECONDS),
        deadline=v.number(checks_raw.get("deadline", 5.0), "checks.deadline", numbers.NETWORK_SECONDS),
    )

    if builtin_services is None and source.startswith("<built-in"):
        builtin_services = frozenset(raw.get("services") or {})
    services = _build_services(v, raw.get("services", {}), checks, env, frozenset(builtin_services or ()))
    shared_pools = _build_shared_pools(v, raw.get("pools", {}))
    layers = _build_layers(v, raw.get("layers", {}), services, shared_pools)
    _check_discovery(v, raw.get("discovery"), services)

    cycle = find_cycle({n: s.depends_on for n, s in services.items()})
    if cycle:
        v.fail(f"services.{cycle[0]}.depends_on", "dependency cycle: " + " -> ".join(cycle) + ".")

    limits = _build_limits(v, raw.get("limits", {}), env)

    machine_raw = v.mapping(raw.get("machine", {}), "machine")
    v.keys(machine_raw, _MACHINE_KEYS, "machine")
    machine = MachineSettings(
        check_memory=v.boolean(machine_raw.get("check_memory", True), "machine.check_memory"),
        memory_reserve_mb=v.integer(machine_raw.get("memory_reserve_mb", 256), "machine.memory_reserve_mb",
                                    numbers.MEMORY_MB),
        measure=v.boolean(machine_raw.get("measure", True), "machine.measure"),
    )
    categories = _build_categories(v, raw.get("categories", {}), layers)

    thresholds = _build_thresholds(v, raw.get("thresholds", {}))

    alloc_raw = v.mapping(raw.get("allocations", {}), "allocations")
    v.keys(alloc_raw, _ALLOCATION_KEYS, "allocations")
    duration = v.number(alloc_raw.get("default_duration_minutes", 30), "allocations.default_duration_minutes",
                        numbers.DURATION_MINUTES)
    lease = v.number(alloc_raw.get("lease_seconds", 30), "allocations.lease_seconds", numbers.LEASE_SECONDS)

    queue_raw = v.mapping(raw.get("queue", {}), "queue")
    v.keys(queue_raw, _QUEUE_KEYS, "queue")
    aging = v.number(queue_raw.get("aging_seconds", 60), "queue.aging_seconds", numbers.AGING_SECONDS)

    return Config(source=source, layers=layers, services=services, limits=limits, machine=machine,
                  checks=checks, thresholds=thresholds, default_duration_minutes=duration, raw=dict(raw),
                  pools=shared_pools, lease_seconds=lease, aging_seconds=aging, categories=categories)


def _build_services(v: _Validator, raw: Any, checks: CheckSettings, env: Mapping[str, str] | None,
                    builtin: frozenset[str] = frozenset()) -> dict[str, ServiceSpec]:
    section = v.mapping(raw, "services")
    services: dict[str, ServiceSpec] = {}
    for name, entry in section.items():
        key = f"services.{name}"
        entry = v.mapping(entry, key)
        v.keys(entry, _SERVICE_KEYS, key)
        kind = entry.get("kind")
        if kind not in kind_names():
            v.fail(f"{key}.kind", f"must be one of {', '.join(kind_names())}, got {kind!r}.")
        kind = str(kind)
        url = v.string(entry.get("url"), f"{key}.url")
        url_env = entry.get("url_env")
        origin = AddressOrigin("defaults" if name in builtin else "file", file=None if name in builtin else v.source)
        if url_env is not None:
            url_env = v.string(url_env, f"{key}.url_env")
            origin = replace(origin, variable=url_env)
            override = envmod.get(url_env, env)
            if override:
                url = override
                origin = AddressOrigin("environment", variable=url_env)
        url = normalized_url(url)  # a password written raw (with / # @) is read as its user meant it
        depends_on = tuple(v.string_list(entry.get("depends_on", []), f"{key}.depends_on"))
        statuses = v.list_of(entry.get("expect_status", []), f"{key}.expect_status")
        expect = tuple(v.integer(s, f"{key}.expect_status[{i}]", _HTTP_STATUS)
                       for i, s in enumerate(statuses))
        health_path = entry.get("health_path")
        if health_path is not None:
            health_path = v.string(health_path, f"{key}.health_path")
        json_field = entry.get("json_field")
        if json_field is not None:
            json_field = v.string(json_field, f"{key}.json_field")
        shell = v.boolean(entry.get("shell", False), f"{key}.shell")
        workdir = entry.get("workdir")
        if workdir is not None:
            workdir = _workdir(v.string(workdir, f"{key}.workdir"), v.source, env)
        services[str(name)] = ServiceSpec(
            name=str(name), kind=kind, url=url, url_env=url_env, depends_on=depends_on,
            health_path=health_path, expect_status=expect, json_field=json_field,
            json_value=entry.get("json_value"),
            connect_timeout=v.number(entry.get("connect_timeout", checks.connect_timeout),
                                     f"{key}.connect_timeout", numbers.NETWORK_SECONDS),
            timeout=v.number(entry.get("timeout", checks.timeout), f"{key}.timeout", numbers.NETWORK_SECONDS),
            start=v.command(entry.get("start"), f"{key}.start", shell=shell, shell_key=f"{key}.shell"),
            stop=v.command(entry.get("stop"), f"{key}.stop", shell=shell, shell_key=f"{key}.shell"),
            shell=shell, workdir=workdir,
            environment=v.environment(entry.get("environment"), f"{key}.environment"),
            origin=origin,
        )
    for name, spec in services.items():
        for i, dep in enumerate(spec.depends_on):
            if dep not in services:
                v.fail(f"services.{name}.depends_on[{i}]", f"unknown service {dep!r}; known services: "
                       f"{', '.join(services)}.")
    return services


def _workdir(path: str, source: str, env: Mapping[str, str] | None) -> str:
    """A command's working directory: ``~`` expanded; a relative one is relative to the
    configuration file it was written in (to the current directory for the built-in one)."""
    expanded = Path(envmod.expand_home(path, env))
    if expanded.is_absolute() or source.startswith("<"):
        return str(expanded)
    return os.path.normpath(Path(source).absolute().parent / expanded)


def _check_discovery(v: _Validator, raw: Any, services: Mapping[str, ServiceSpec]) -> None:
    """``discovery``: where services' addresses may come from besides the configuration.
    Only validated here; :mod:`netra_rm.services.compose` reads it when a check needs it."""
    section = v.mapping(raw, "discovery")
    v.keys(section, _DISCOVERY_KEYS, "discovery")
    compose = section.get("compose")
    if compose is None or isinstance(compose, bool):
        return
    compose = v.mapping(compose, "discovery.compose")
    v.keys(compose, _COMPOSE_KEYS, "discovery.compose")
    for name in ("file", "project"):
        if name in compose:
            v.string(compose[name], f"discovery.compose.{name}")
    names = v.mapping(compose.get("services"), "discovery.compose.services")
    for service, compose_name in names.items():
        if service not in services:
            v.fail(f"discovery.compose.services.{service}", f"unknown service {service!r}; known services: "
                   f"{', '.join(services)}.")
        v.string(compose_name, f"discovery.compose.services.{service}")


def _build_layers(v: _Validator, raw: Any, services: Mapping[str, ServiceSpec],
                  pools: Mapping[str, SharedPool] | None = None) -> dict[str, Layer]:
    pools = pools or {}
    section = v.mapping(raw, "layers")
    layers: dict[str, Layer] = {}
    for name, entry in section.items():
        key = f"layers.{name}"
        entry = v.mapping(entry, key)
        v.keys(entry, _LAYER_KEYS, key)
        needed = tuple(v.string_list(entry.get("services", []), f"{key}.services"))
        for i, svc in enumerate(needed):
            if svc not in services:
                v.fail(f"{key}.services[{i}]", f"unknown service {svc!r}; known services: "
                       f"{', '.join(services)}.")
        pool_raw = v.mapping(entry.get("pool"), f"{key}.pool")
        v.keys(pool_raw, _POOL_KEYS, f"{key}.pool")
        for required in _POOL_REQUIRED:
            if required not in pool_raw:
                v.fail(f"{key}.pool.{required}", "is missing.")
        instances, names, properties = _instances(v, pool_raw["instances"], f"{key}.pool.instances")
        pool = Pool(
            memory_mb=v.integer(pool_raw["memory_mb"], f"{key}.pool.memory_mb", numbers.POOL_MEMORY_MB),
            cpu_percent=v.number(pool_raw["cpu_percent"], f"{key}.pool.cpu_percent", numbers.POOL_CPU_PERCENT),
            instances=instances, scope=_scope(v, pool_raw.get("scope", "host"), f"{key}.pool.scope"),
            names=names, properties=properties,
        )
        uses = tuple(v.string_list(entry.get("uses", []), f"{key}.uses"))
        for i, shared in enumerate(uses):
            if shared not in pools:
                known = ", ".join(pools) or "(none configured)"
                v.fail(f"{key}.uses[{i}]", f"unknown pool {shared!r}; pools: {known}.")
        # the default share: the pool divided by its instances, rounded down (CPU to a
        # thousandth of a percent), so that `instances` default shares always fit the pool
        share_cpu = (round(pool.cpu_percent * 1000) // pool.instances) / 1000
        default_memory = v.integer(entry.get("default_memory_mb", pool.memory_mb // pool.instances),
                                   f"{key}.default_memory_mb", numbers.MEMORY_MB.within(maximum=pool.memory_mb))
        default_cpu = v.number(entry.get("default_cpu_percent", share_cpu), f"{key}.default_cpu_percent",
                               numbers.CPU_PERCENT.within(maximum=pool.cpu_percent))
        description = entry.get("description", "")
        layers[str(name)] = Layer(name=str(name), services=needed, pool=pool, default_memory_mb=default_memory,
                                  default_cpu_percent=default_cpu,
                                  description=v.string(description, f"{key}.description") if description else "",
                                  uses=tuple(dict.fromkeys(uses)),
                                  enforce=v.boolean(entry.get("enforce", False), f"{key}.enforce"))
    return layers


def _instances(v: _Validator, raw: Any, key: str) -> tuple[int, tuple[str, ...], dict[str, dict[str, str]]]:
    """A pool's ``instances``: a count, or a list of named instances, each with optional
    ``properties`` (text values, passed to the holder as NETRA_RM_INSTANCE_<NAME>)."""
    if not isinstance(raw, list):
        return v.integer(raw, key, numbers.INSTANCES), (), {}
    if not raw:
        v.fail(key, "lists no instances; give a count or at least one {name: ...}.")
    names: list[str] = []
    properties: dict[str, dict[str, str]] = {}
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        entry = v.mapping(item, where)
        v.keys(entry, _INSTANCE_KEYS, where)
        name = entry.get("name")
        if not isinstance(name, str) or not _INSTANCE_NAME.match(name):
            v.fail(f"{where}.name", f"must be a name of letters, digits, '_', '.' or '-', got {name!r}.")
        if name in names:
            v.fail(f"{where}.name", f"{name!r} is listed twice.")
        names.append(str(name))
        props = v.mapping(entry.get("properties", {}), f"{where}.properties")
        for prop, value in props.items():
            if not isinstance(prop, str) or not _ENV_NAME.match(prop):
                v.fail(f"{where}.properties", f"{prop!r} is not a valid property name (letters, digits, '_').")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                v.fail(f"{where}.properties.{prop}", "must be text or a number.")
        properties[str(name)] = {str(p): str(val) for p, val in props.items()}
    return len(names), tuple(names), properties


def _build_categories(v: _Validator, raw: Any, layers: Mapping[str, Layer]) -> Categories:
    """``categories:``: per category the defaults a request that does not say gets
    (``memory_mb``, ``cpu_percent``, ``duration_minutes``, ``priority``), and ``strict``."""
    section = v.mapping(raw if raw is not None else {}, "categories")
    strict = v.boolean(section.get("strict", False), "categories.strict")
    defaults: dict[str, CategoryDefaults] = {}
    for name, entry in section.items():
        if name == "strict":
            continue
        key = f"categories.{name}"
        entry = v.mapping(entry if entry is not None else {}, key)
        v.keys(entry, _CATEGORY_KEYS, key)
        memory = entry.get("memory_mb")
        cpu = entry.get("cpu_percent")
        duration = entry.get("duration_minutes")
        priority = entry.get("priority")
        description = entry.get("description", "")
        defaults[str(name)] = CategoryDefaults(
            memory_mb=None if memory is None else v.integer(memory, f"{key}.memory_mb", numbers.POOL_MEMORY_MB),
            cpu_percent=None if cpu is None else v.number(cpu, f"{key}.cpu_percent", numbers.POOL_CPU_PERCENT),
            duration_minutes=None if duration is None else v.number(duration, f"{key}.duration_minutes",
                                                                    numbers.DURATION_MINUTES),
            priority=None if priority is None else v.integer(priority, f"{key}.priority", numbers.PRIORITY),
            description=v.string(description, f"{key}.description") if description else "",
        )
    return Categories(defaults=defaults, strict=strict)


def _scope(v: _Validator, value: Any, key: str) -> str:
    if value not in POOL_SCOPES:
        v.fail(key, f"must be one of {', '.join(POOL_SCOPES)}, got {value!r}.")
    return str(value)


def _build_shared_pools(v: _Validator, raw: Any) -> dict[str, SharedPool]:
    """``pools:``: named pools that layers draw from besides their own (``uses:``)."""
    section = v.mapping(raw, "pools")
    pools: dict[str, SharedPool] = {}
    for name, entry in section.items():
        key = f"pools.{name}"
        entry = v.mapping(entry, key)
        v.keys(entry, _SHARED_POOL_KEYS, key)
        if "instances" not in entry:
            v.fail(f"{key}.instances", "is missing.")
        memory = entry.get("memory_mb")
        cpu = entry.get("cpu_percent")
        description = entry.get("description", "")
        instances, names, properties = _instances(v, entry["instances"], f"{key}.instances")
        pools[str(name)] = SharedPool(
            name=str(name), instances=instances, names=names, properties=properties,
            scope=_scope(v, entry.get("scope", "host"), f"{key}.scope"),
            memory_mb=None if memory is None else v.integer(memory, f"{key}.memory_mb", numbers.POOL_MEMORY_MB),
            cpu_percent=None if cpu is None else v.number(cpu, f"{key}.cpu_percent", numbers.FLEET_CPU_PERCENT),
            description=v.string(description, f"{key}.description") if description else "")
    return pools


def _build_limits(v: _Validator, raw: Any, env: Mapping[str, str] | None) -> Limits:
    section = v.mapping(raw, "limits")
    v.keys(section, _LIMIT_KEYS, "limits")
    values: dict[str, Any] = {
        "max_memory_mb": v.integer(section.get("max_memory_mb", 8192), "limits.max_memory_mb",
                                   numbers.POOL_MEMORY_MB),
        "max_cpu_percent": v.number(section.get("max_cpu_percent", 90), "limits.max_cpu_percent",
                                    numbers.FLEET_CPU_PERCENT),
        "max_parallel_instances": v.integer(section.get("max_parallel_instances", 10),
                                            "limits.max_parallel_instances", numbers.INSTANCES),
    }
    sources = dict.fromkeys(values, "config")
    for variable, raw_value in envmod.limit_overrides(env).items():
        field_name = envmod.LIMIT_VARIABLES[variable]
        values[field_name] = envmod.env_number(variable, raw_value, _LIMIT_RANGES[field_name])
        sources[field_name] = variable
    return Limits(sources=sources, **values)


#: The range of each global cap, in the configuration and in its MAX_* variable.
_LIMIT_RANGES = {"max_memory_mb": numbers.POOL_MEMORY_MB, "max_cpu_percent": numbers.FLEET_CPU_PERCENT,
                 "max_parallel_instances": numbers.INSTANCES}
_HTTP_STATUS = numbers.Range(100, 599, integer=True)
_THRESHOLD_RANGES = {"memory_percent": numbers.PERCENT, "cpu_percent": numbers.PERCENT,
                     "load_per_core": numbers.LOAD_PER_CORE, "processes": numbers.PROCESSES}


def _build_thresholds(v: _Validator, raw: Any) -> dict[str, Any]:
    section = v.mapping(raw, "thresholds")
    v.keys(section, _THRESHOLD_METRICS | {"hold_seconds"}, "thresholds")
    result: dict[str, Any] = {}
    for metric in sorted(_THRESHOLD_METRICS & set(section)):
        key = f"thresholds.{metric}"
        levels = v.mapping(section[metric], key)
        v.keys(levels, {"warning", "critical"}, key)
        for required in ("warning", "critical"):
            if required not in levels:
                v.fail(f"{key}.{required}", "is missing.")
        warning = v.number(levels["warning"], f"{key}.warning", _THRESHOLD_RANGES[metric])
        critical = v.number(levels["critical"], f"{key}.critical", _THRESHOLD_RANGES[metric])
        if warning > critical:
            v.fail(key, f"warning ({warning:g}) must not be above critical ({critical:g}).")
        result[metric] = {"warning": warning, "critical": critical}
    result["hold_seconds"] = v.number(section.get("hold_seconds", 6), "thresholds.hold_seconds",
                                      numbers.HOLD_SECONDS)
    return result


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


class _Validator:
    """Small typed readers that fail with the file and key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(message, path=self.source, key=key,
                          remediation=[f"Fix {key} in {self.source}; `netra-rm config validate "
                                       f"{self.source}` checks the file."])

    def keys(self, mapping: Mapping[str, Any], allowed: set[str], key: str) -> None:
        for name in mapping:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                self.fail(where, f"unknown key {name!r}; allowed here: {', '.join(sorted(allowed))}.")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {_type_name(value)}.")
        return value

    def list_of(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_type_name(value)}.")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {_type_name(value)}.")
        return value

    def string_list(self, value: Any, key: str) -> list[str]:
        return [self.string(item, f"{key}[{i}]") for i, item in enumerate(self.list_of(value, key))]

    def command(self, value: Any, key: str, *, shell: bool, shell_key: str) -> tuple[str, ...]:
        """A start/stop command: a list of arguments, or one string. Without ``shell`` a
        string is split into words as a shell would, but shell syntax (pipes, ``&&``,
        redirections, ``$VAR``) is refused rather than passed on literally."""
        if value is None:
            return ()
        if shell:
            if not isinstance(value, str) or not value.strip():
                self.fail(key, f"with {shell_key}: true this must be one non-empty string (a /bin/sh "
                               f"script), got {_type_name(value)}.")
            return (value,)
        if isinstance(value, str):
            found = _SHELL_SYNTAX.search(value)
            if found:
                self.fail(key, f"uses shell syntax ({found.group(0)!r}); set {shell_key}: true to run it with "
                               f"/bin/sh -c, or give the command as a list of arguments.")
            try:
                words = shlex.split(value)
            except ValueError as exc:
                self.fail(key, f"cannot be split into arguments ({exc}).")
            if not words:
                self.fail(key, "must not be empty.")
            return tuple(words)
        if not isinstance(value, list) or not value:
            self.fail(key, f"must be a list of arguments or a string, got {_type_name(value)}.")
        args: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                self.fail(f"{key}[{i}]", f"must be a string, got {_type_name(item)}.")
            args.append(str(item))
        if not args[0]:
            self.fail(f"{key}[0]", "must name the program to run.")
        return tuple(args)

    def environment(self, value: Any, key: str) -> dict[str, str]:
        """Extra variables for a service's commands: names to strings (numbers allowed)."""
        section = self.mapping(value, key)
        result: dict[str, str] = {}
        for name, item in section.items():
            where = f"{key}.{name}"
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                self.fail(where, f"{name!r} is not a valid variable name.")
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                hint = " (quote it: YAML reads yes/no/true/false as booleans)" if isinstance(item, bool) else ""
                self.fail(where, f"must be a string, got {_type_name(item)}{hint}.")
            result[name] = str(item)
        return result

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}.")
        return value

    def number(self, value: Any, key: str, rng: numbers.Range) -> float:
        """A finite number within ``rng`` (see :mod:`netra_rm.numbers`)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be {rng.describe()}, got {_type_name(value)} ({value!r}).")
        why = numbers.problem(value, rng)
        if why is not None:
            self.fail(key, f"{why}.")
        return value

    def integer(self, value: Any, key: str, rng: numbers.Range) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be {rng.describe()}, got {value!r}.")
        return int(self.number(value, key, rng))


def _check_keys(user: Mapping[str, Any], allowed: set[str], key: str, source: str) -> None:
    _Validator(source).keys(user, allowed, key)
