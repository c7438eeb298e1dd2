"""Docker Compose discovery: where do the services publish their ports on this host?

Asked of a running Docker engine first (``docker compose ps --format json``), and,
when no engine answers, read from the compose file itself (``compose.yaml``,
``docker-compose.yml``, ... and its ``.override`` file): every port form of the compose
specification, with ``${VAR}``, ``${VAR:-default}`` and the other interpolations filled
from the environment and the project's ``.env`` file. The found host port replaces the
port (and, for a specific host IP, the host) of the service's configured URL; user,
password, path and scheme stay. Services the compose project does not publish keep
their configured address, and so does every service when there is nothing to read.

Turned on with ``up --discover compose`` or ``discovery: {compose: ...}`` in the
configuration. Nothing here runs unless asked: ``allocate`` and ``release`` never import it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config import env as envmod
from ..errors import UsageError
from .spec import ServiceSpec

#: The names ``docker compose`` looks for, in its order of preference.
COMPOSE_FILE_NAMES: tuple[str, ...] = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")

#: The port a service of each kind listens on inside its container.
CONTAINER_PORTS: dict[str, int] = {"postgresql": 5432, "redis": 6379, "clickhouse": 8123}

# images that are the same kind of server as a netra-rm service (matched on the image's base name)
_IMAGE_HINTS: dict[str, tuple[str, ...]] = {
    "postgresql": ("postgres", "postgis", "timescaledb", "pgvector"),
    "redis": ("redis", "valkey", "keydb"),
    "clickhouse": ("clickhouse",),
}
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}
_ENGINE_TIMEOUT = 5.0
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class ComposeError(UsageError):
    """A compose file netra-rm cannot read (malformed YAML, a ``${VAR:?message}`` unset...)."""


@dataclass(frozen=True)
class ComposeSettings:
    """How to find the compose project: its file, its project name, and which compose
    service each netra-rm service is (when the names differ)."""

    file: str | None = None
    project: str | None = None
    services: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PublishedPort:
    """One ``ports`` entry: container ``target`` published on host ``published``
    (None when the host port is chosen at start-up and only the engine knows it)."""

    target: int
    published: int | None
    host_ip: str | None = None
    protocol: str = "tcp"


@dataclass(frozen=True)
class ComposeService:
    """A compose service as far as discovery cares: its image and published ports."""

    name: str
    image: str | None = None
    ports: tuple[PublishedPort, ...] = ()


@dataclass(frozen=True)
class Discovery:
    """What discovery found, and where from.

    ``source`` is ``"engine"`` (a Docker engine answered), ``"file"`` (the compose file
    was read) or ``"none"`` (nothing to read: the configured addresses stand).
    ``urls`` holds the new address per netra-rm service, with the configured credentials,
    so it must be masked before it is shown (:meth:`to_dict` does).
    """

    source: str
    file: str | None = None
    urls: dict[str, str] = field(default_factory=dict, hash=False)
    compose_services: dict[str, str] = field(default_factory=dict, hash=False)
    notes: tuple[str, ...] = ()

    def apply(self, specs: Mapping[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        """``specs`` with the discovered addresses in place of the configured ones."""
        return {name: replace(spec, url=self.urls[name]) if name in self.urls else spec
                for name, spec in specs.items()}

    def to_dict(self) -> dict[str, Any]:
        from ..redact import mask_url

        return {"source": self.source, "file": self.file,
                "services": {name: {"compose_service": self.compose_services.get(name), "url": mask_url(url)}
                             for name, url in self.urls.items()},
                "notes": list(self.notes)}


# -- settings ------------------------------------------------------------------------------

def settings_from_config(raw: Mapping[str, Any], source: str) -> ComposeSettings | None:
    """The ``discovery.compose`` section of a validated configuration, or None when off.

    A relative ``file`` is relative to the configuration file that names it.
    """
    section = (raw.get("discovery") or {}).get("compose")
    if section is None or section is False:
        return None
    if section is True:
        return ComposeSettings()
    file = section.get("file")
    if file and not Path(file).is_absolute() and not source.startswith("<"):
        file = str(Path(source).absolute().parent / file)
    return ComposeSettings(file=file, project=section.get("project"),
                           services=dict(section.get("services") or {}))


# -- finding and reading the compose file --------------------------------------------------

def find_compose_file(directory: Path) -> Path | None:
    """The compose file ``docker compose`` would use from ``directory``: the first of
    :data:`COMPOSE_FILE_NAMES` there or in a parent directory."""
    for folder in (directory, *directory.parents):
        for name in COMPOSE_FILE_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def override_file(path: Path) -> Path | None:
    """``compose.override.yaml`` beside ``compose.yaml`` (and so on), which compose merges in."""
    stem, dot, suffix = path.name.rpartition(".")
    candidate = path.with_name(f"{stem}.override.{suffix}") if dot else None
    return candidate if candidate is not None and candidate.is_file() else None


def read_dotenv(path: Path) -> dict[str, str]:
    """A compose ``.env`` file: ``NAME=value`` lines, ``#`` comments, optional quotes and ``export``."""
    values: dict[str, str] = {}
    try:
        text = path.read_text("utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if re.fullmatch(_NAME, name):
            values[name] = value
    return values


def interpolate(text: str, variables: Mapping[str, str], *, where: str = "", unset: list[str] | None = None) -> str:
    """Fill ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR?error}``, ``${VAR:+other}`` and ``${VAR+other}`` (nested allowed) as compose does;
    ``$$`` is a literal ``$``. Names of unset variables used without a default go to ``unset``.

    Raises :class:`ComposeError` for a ``?`` form whose variable is missing, or bad syntax.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _closing_brace(text, i + 2)
            if end < 0:
                raise ComposeError(f"{where}unterminated ${{...}} in {text!r}.")
            out.append(_expand(text[i + 2:end], variables, where=where, unset=unset))
            i = end + 1
            continue
        match = re.match(_NAME, text[i + 1:])
        if match:
            name = match.group(0)
            value = variables.get(name)
            if value is None and unset is not None:
                unset.append(name)
            out.append(value or "")
            i += 1 + len(name)
            continue
        out.append("$")
        i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _expand(body: str, variables: Mapping[str, str], *, where: str, unset: list[str] | None) -> str:
    match = re.match(rf"({_NAME})(?:(:?[-?+])(.*))?\Z", body, re.DOTALL)
    if not match:
        raise ComposeError(f"{where}invalid interpolation ${{{body}}}.")
    name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
    value = variables.get(name)
    empty_counts = bool(operator) and operator.startswith(":")
    missing = value is None or (empty_counts and value == "")
    if not operator:
        if value is None and unset is not None:
            unset.append(name)
        return value or ""
    kind = operator[-1]
    if kind == "-":
        return interpolate(argument, variables, where=where, unset=unset) if missing else str(value)
    if kind == "+":
        return "" if missing else interpolate(argument, variables, where=where, unset=unset)
    if missing:  # "?"
        message = interpolate(argument, variables, where=where, unset=unset) or "is not set"
        raise ComposeError(f"{where}required variable {name} {message}.")
    return str(value)


def parse_ports(value: Any, *, where: str = "") -> list[PublishedPort]:
    """A service's ``ports`` list, short (``"127.0.0.1:8001-8002:8001-8002/tcp"``) and long
    (``{target: 80, published: "8080", host_ip: ...}``) forms, ranges expanded."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ComposeError(f"{where}ports must be a list, got {type(value).__name__}.")
    ports: list[PublishedPort] = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            ports.extend(_long_port(entry, where=f"{where}ports[{i}]: "))
        elif isinstance(entry, (str, int)) and not isinstance(entry, bool):
            ports.extend(_short_port(str(entry), where=f"{where}ports[{i}]: "))
        else:
            raise ComposeError(f"{where}ports[{i}]: cannot read {entry!r}.")
    return ports


def _short_port(text: str, *, where: str) -> list[PublishedPort]:
    spec = text.strip()
    protocol = "tcp"
    if "/" in spec:
        spec, protocol = spec.rsplit("/", 1)
    host_ip: str | None = None
    if spec.startswith("["):  # [::1]:6001:6001
        end = spec.find("]")
        if end < 0 or spec[end + 1:end + 2] != ":":
            raise ComposeError(f"{where}cannot read port {text!r}.")
        host_ip, spec = spec[1:end], spec[end + 2:]
        parts = spec.split(":")
        if len(parts) == 1:
            parts = ["", parts[0]]
        published, target = parts[-2], parts[-1]
        if len(parts) > 2:
            raise ComposeError(f"{where}cannot read port {text!r}.")
    else:
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, published, target = parts
        elif len(parts) == 2:
            published, target = parts
        else:
            published, target = "", parts[0]
    return _pair(published, target, host_ip or None, protocol.lower(), text=text, where=where)


def _long_port(entry: Mapping[str, Any], *, where: str) -> list[PublishedPort]:
    target = entry.get("target")
    if target is None:
        raise ComposeError(f"{where}a port in the long form needs `target`.")
    published = entry.get("published")
    return _pair("" if published is None else str(published), str(target), entry.get("host_ip") or None,
                 str(entry.get("protocol") or "tcp").lower(), text=str(dict(entry)), where=where)


def _pair(published: str, target: str, host_ip: str | None, protocol: str, *, text: str,
          where: str) -> list[PublishedPort]:
    targets = _port_range(target, text=text, where=where)
    if not published.strip():
        return [PublishedPort(t, None, host_ip, protocol) for t in targets]
    hosts = _port_range(published, text=text, where=where)
    if len(hosts) == len(targets):
        return [PublishedPort(t, h, host_ip, protocol) for t, h in zip(targets, hosts)]
    if len(targets) == 1:  # "8000-9000:80": one host port out of a range, chosen at start
        return [PublishedPort(targets[0], None, host_ip, protocol)]
    raise ComposeError(f"{where}port {text!r}: the host range and the container range differ in length.")


def _port_range(value: str, *, text: str, where: str) -> list[int]:
    value = value.strip()
    first, dash, last = value.partition("-")
    try:
        low = int(first)
        high = int(last) if dash else low
    except ValueError:
        raise ComposeError(f"{where}cannot read port {text!r}: {value!r} is not a port number or range.") from None
    if not (0 < low <= high <= 65535):
        raise ComposeError(f"{where}port {text!r}: {value!r} is out of range.")
    return list(range(low, high + 1))


def read_compose_file(path: Path, *, env: Mapping[str, str] | None = None,
                      notes: list[str] | None = None) -> dict[str, ComposeService]:
    """The services of the compose file at ``path`` merged with its override file, ports
    interpolated from the environment (which wins) and the project's ``.env``."""
    variables = {**read_dotenv(path.parent / ".env"), **envmod.environ(env)}
    services: dict[str, ComposeService] = {}
    unset: list[str] = []
    for file in (path, override_file(path)):
        if file is None:
            continue
        for name, service in _services_of(file, variables, unset).items():
            before = services.get(name)
            if before is None:
                services[name] = service
            else:  # compose merges an override's ports into the base's
                ports = before.ports + tuple(p for p in service.ports if p not in before.ports)
                services[name] = ComposeService(name, service.image or before.image, ports)
    if unset and notes is not None:
        names = ", ".join(dict.fromkeys(unset))
        notes.append(f"{path.name} uses {names} without a default and it is not set; compose would use an "
                     f"empty string there.")
    return services


def _services_of(path: Path, variables: Mapping[str, str], unset: list[str]) -> dict[str, ComposeService]:
    data = _load_yaml(path)
    section = data.get("services") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ComposeError(f"{path}: services must be a mapping.")
    found: dict[str, ComposeService] = {}
    for name, entry in section.items():
        if not isinstance(entry, dict):
            continue
        where = f"{path}: services.{name}."
        ports = _interpolated(entry.get("ports"), variables, where=where, unset=unset)
        image = _interpolated(entry.get("image"), variables, where=where, unset=unset)
        found[str(name)] = ComposeService(str(name), image if isinstance(image, str) else None,
                                          tuple(parse_ports(ports, where=where)))
    return found


def _interpolated(value: Any, variables: Mapping[str, str], *, where: str, unset: list[str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables, where=where, unset=unset)
    if isinstance(value, list):
        return [_interpolated(v, variables, where=where, unset=unset) for v in value]
    if isinstance(value, dict):
        return {k: _interpolated(v, variables, where=where, unset=unset) for k, v in value.items()}
    return value


def _load_yaml(path: Path) -> Any:
    import yaml

    class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        """A safe loader that also reads compose's merge tags ``!reset`` and ``!override``."""

    def _tagged(loader: Any, node: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    _Loader.add_constructor("!reset", _tagged)
    _Loader.add_constructor("!override", _tagged)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ComposeError(f"cannot read the compose file {path}: {exc.strerror or exc}.") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ComposeError(f"the compose file {path} is not valid YAML{at}.") from None


# -- asking the engine ---------------------------------------------------------------------

def parse_ps_output(text: str) -> dict[str, ComposeService]:
    """``docker compose ps --format json``: one JSON object per line (Compose 2.21 and
    later) or one JSON array (earlier). Unpublished ports (``PublishedPort`` 0) are skipped."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    found: dict[str, ComposeService] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        name = row.get("Service") or row.get("Name")
        if not name:
            continue
        ports: list[PublishedPort] = []
        for pub in row.get("Publishers") or []:
            published = int(pub.get("PublishedPort") or 0)
            if not published:
                continue
            port = PublishedPort(int(pub.get("TargetPort") or 0), published, pub.get("URL") or None,
                                 str(pub.get("Protocol") or "tcp").lower())
            if port not in ports:
                ports.append(port)
        before = found.get(name)
        merged = tuple(ports) if before is None else before.ports + tuple(p for p in ports if p not in before.ports)
        found[name] = ComposeService(name, row.get("Image") or None, merged)
    return found


@dataclass(frozen=True)
class EngineAnswer:
    """The engine's answer, or why there was none (``reason``, one short clause)."""

    services: dict[str, ComposeService] | None
    reason: str | None = None


def query_engine(file: Path | None, project: str | None, *, env: Mapping[str, str] | None = None,
                 timeout: float = _ENGINE_TIMEOUT) -> EngineAnswer:
    """Run ``docker compose [-f FILE] [-p PROJECT] ps --format json`` (``docker-compose``
    when the plugin is missing), bounded by ``timeout`` seconds."""
    program = envmod.docker_program(env)
    docker = shutil.which(program, path=envmod.search_path(env))
    if docker is None:
        return EngineAnswer(None, f"Docker is not installed (no `{program}` on PATH)")
    selection: list[str] = []
    if file is not None:
        selection += ["-f", str(file)]
    if project:
        selection += ["-p", project]
    attempts = [[docker, "compose", *selection, "ps", "--format", "json"]]
    legacy = shutil.which("docker-compose", path=envmod.search_path(env))
    if legacy:
        attempts.append([legacy, *selection, "ps", "--format", "json"])
    reason = "no Docker engine answers"
    deadline = time.monotonic() + timeout
    for argv in attempts:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=left, stdin=subprocess.DEVNULL,
                                  env=dict(envmod.environ(env)), check=False)
        except subprocess.TimeoutExpired:
            return EngineAnswer(None, f"`docker compose ps` did not answer within {timeout:g} s")
        except OSError as exc:
            reason = f"cannot run {argv[0]}: {exc.strerror or exc}"
            continue
        if done.returncode == 0:
            try:
                return EngineAnswer(parse_ps_output(done.stdout))
            except (ValueError, TypeError) as exc:
                return EngineAnswer(None, f"`docker compose ps --format json` printed something else than "
                                          f"JSON ({exc})")
        reason = _engine_reason(done.stderr or done.stdout)
        if "compose plugin is not installed" not in reason:
            break
    return EngineAnswer(None, reason)


def _engine_reason(text: str) -> str:
    lowered = text.lower()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
    if "cannot connect to the docker daemon" in lowered or "is the docker daemon running" in lowered \
            or "error during connect" in lowered or "docker.sock" in lowered:
        return f"no Docker engine answers ({first})"
    if "unknown command" in lowered or "is not a docker command" in lowered \
            or "unknown shorthand flag" in lowered or "unknown flag" in lowered:
        return "the Docker Compose plugin is not installed (`docker compose` is unknown)"
    return f"`docker compose ps` failed: {first}"


# -- matching and rewriting ----------------------------------------------------------------

def match_services(specs: Mapping[str, ServiceSpec], compose: Mapping[str, ComposeService],
                   explicit: Mapping[str, str]) -> dict[str, str]:
    """Which compose service each netra-rm service is: the configured name, else the same
    name, else the one compose service whose image is that kind of server."""
    matched: dict[str, str] = {}
    for name, spec in specs.items():
        if name in explicit:
            if explicit[name] in compose:
                matched[name] = explicit[name]
            continue
        if name in compose:
            matched[name] = name
            continue
        hints = _IMAGE_HINTS.get(spec.kind, ())
        candidates = [c.name for c in compose.values() if c.image and _image_base(c.image).startswith(hints)] \
            if hints else []
        if len(candidates) == 1:
            matched[name] = candidates[0]
    return matched


def _image_base(image: str) -> str:
    """``docker.io/library/postgres:16-alpine`` -> ``postgres``."""
    base = image.rsplit("/", 1)[-1]
    return base.split("@", 1)[0].split(":", 1)[0].lower()


def pick_port(spec: ServiceSpec, service: ComposeService) -> PublishedPort | None:
    """The published port that serves ``spec``: the kind's container port, else the
    configured URL's port, else the only TCP port published."""
    tcp = [p for p in service.ports if p.protocol == "tcp"]
    wanted: list[int] = []
    if spec.kind in CONTAINER_PORTS:
        wanted.append(CONTAINER_PORTS[spec.kind])
    try:
        configured = urlsplit(spec.url).port
    except ValueError:
        configured = None
    if configured:
        wanted.append(configured)
    for target in wanted:
        for port in tcp:
            if port.target == target:
                return port
    targets = {p.target for p in tcp}
    if len(targets) == 1:
        return tcp[0]
    return None


def rewrite_url(url: str, port: int, host_ip: str | None) -> str:
    """``url`` pointing at ``port`` (and at ``host_ip`` when it is a specific address)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if host_ip and host_ip not in _WILDCARD_HOSTS:
        host = host_ip.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def discover(specs: Mapping[str, ServiceSpec], settings: ComposeSettings, *, env: Mapping[str, str] | None = None,
             cwd: Path | None = None, timeout: float = _ENGINE_TIMEOUT,
             fixed: Iterable[str] = ()) -> Discovery:
    """Find the published ports of ``specs`` (those in ``fixed`` keep their address: an
    environment variable named it) from the engine, else the compose file.

    Never raises for a missing Docker or compose file: that is a note, and the configured
    addresses stand. A compose file that cannot be read is a :class:`ComposeError`.
    """
    notes: list[str] = []
    file = Path(settings.file) if settings.file else find_compose_file(cwd or Path.cwd())
    if settings.file and not Path(settings.file).is_file():
        raise ComposeError(f"the compose file {settings.file} does not exist.",
                           remediation=["Fix discovery.compose.file in the configuration, or remove it to "
                                        "look for compose.yaml / docker-compose.yml in the current directory."])
    if file is None and not settings.project:
        where = cwd or Path.cwd()
        return Discovery("none", notes=(f"no compose file ({', '.join(COMPOSE_FILE_NAMES)}) in {where} or its "
                                        f"parents; using the configured addresses",))
    answer = query_engine(file, settings.project, env=env, timeout=timeout)
    file_services: dict[str, ComposeService] = {}
    if file is not None:
        file_services = read_compose_file(file, env=env, notes=notes)
    if answer.services is not None:
        source = "engine"
        # the engine knows the running containers; the file fills in the rest
        compose = {**file_services, **answer.services}
    elif file is not None:
        source = "file"
        notes.insert(0, f"{answer.reason}; reading the published ports from {file}")
        compose = file_services
    else:
        notes.insert(0, f"{answer.reason} and there is no compose file; using the configured addresses")
        return Discovery("none", notes=tuple(notes))
    skip = set(fixed)
    candidates = {n: s for n, s in specs.items() if n not in skip}
    matched = match_services(candidates, compose, settings.services)
    urls: dict[str, str] = {}
    for name, compose_name in matched.items():
        spec = specs[name]
        port = pick_port(spec, compose[compose_name])
        if port is None:
            if compose[compose_name].ports:
                notes.append(f"{name}: compose service {compose_name} publishes several ports and none is "
                             f"the one {name} listens on; keeping {name}'s configured address")
            continue
        if port.published is None:
            notes.append(f"{name}: compose service {compose_name} publishes container port {port.target} on a "
                         f"host port chosen at start-up, which only a running Docker engine can tell; keeping "
                         f"the configured address")
            continue
        urls[name] = rewrite_url(spec.url, port.published, port.host_ip)
    return Discovery(source, str(file) if file else None, urls, dict(matched), tuple(notes))


# -- the checks' view: discovery applied once per process, notes said once -------------------

_said: set[str] = set()
_said_lock = threading.Lock()


def say_once(notes: Sequence[str]) -> list[str]:
    """The notes not said yet in this process (each is said once, however often discovery runs)."""
    with _said_lock:
        fresh = [n for n in notes if n not in _said]
        _said.update(fresh)
    return fresh


def fixed_by_environment(specs: Mapping[str, ServiceSpec], env: Mapping[str, str] | None = None) -> list[str]:
    """Services whose address an environment variable gives: discovery leaves those alone."""
    return [name for name, spec in specs.items() if spec.url_env and envmod.get(spec.url_env, env)]
