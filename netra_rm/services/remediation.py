"""Steps a person can follow to make an unhealthy service healthy, per kind and failure.

Pure text built from the spec: no I/O, no driver imports, and every URL shown masked.
Each step names where the address came from (the variable that is set, the configuration
file and key, the built-in defaults, or the Compose service), so the person changes the
right thing; a fix never quotes a masked secret back, and every command shown is one a
person can paste (the `psql` and `redis-cli` checks are run against real servers in the
tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from ..redact import mask_url
from .spec import ServiceSpec

_DEFAULT_PORTS: dict[str, int] = {
    "postgresql": 5432, "redis": 6379, "clickhouse": 8123, "http": 80, "websocket": 80,
}

#: Names a person recognises in messages.
_TITLES: dict[str, str] = {
    "postgresql": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse",
}


def remediation_for(spec: ServiceSpec, reason: str, *,
                    blocked_by: Sequence[str] = ()) -> list[str]:
    """The steps for ``spec`` failing with ``reason`` (a :class:`ServiceResult` reason word).

    ``blocked_by`` names the root causes when ``reason`` is ``"blocked"``.
    """
    if reason == "ok":
        return []
    if reason == "blocked":
        return blocked_steps(spec.name, blocked_by)
    host, port, user, database = _where(spec)
    title = _TITLES.get(spec.kind, spec.name)
    steps: list[str] = []
    if reason in ("refused", "reset", "unreachable"):
        steps.extend(_start_steps(spec, host, port))
        steps.append(_address_step(spec))
    elif reason == "timeout":
        steps.append(
            f"{spec.name} at {host}:{port} accepts connections but did not answer within "
            f"{spec.timeout:g} s: it may be hung, overloaded or still starting, or that port "
            f"belongs to something that is not {title}; check its logs."
        )
        steps.append(_address_step(spec))
    elif reason == "auth":
        steps.extend(_auth_steps(spec, host, port, user, database))
    elif reason == "unknown_database":
        steps.extend(_database_steps(spec, host, port, user, database))
    elif reason == "dns":
        steps.append(f"The host {host!r} cannot be resolved: fix the host name.")
        steps.append(_address_step(spec))
    elif reason == "bad_url":
        steps.append(f"Fix the address of {spec.name}: expected {_example_url(spec)}.")
        steps.append(_address_step(spec))
    elif reason == "tls":
        steps.append(f"The TLS handshake with {host}:{port} failed: check the certificate, "
                     f"or use a plain (non-TLS) URL if the server does not speak TLS.")
        steps.append("If the certificate comes from a private CA, point SSL_CERT_FILE at a PEM file "
                     "holding that CA's certificate.")
        steps.append(_address_step(spec))
    elif reason == "loading":
        steps.append(f"{title} is loading its data set into memory; wait for it to finish "
                     f"(for example `netra-rm layer NAME --timeout 60`).")
    elif reason in ("bad_status", "bad_body", "bad_reply"):
        what = _health_target(spec)
        steps.append(f"{what} did not answer as a healthy {title} would: check the logs of "
                     f"{spec.name}, and that its address points at {spec.name} itself.")
        steps.append(_address_step(spec))
    elif reason == "bad_handshake":
        steps.append(f"{host}:{port} did not complete a WebSocket handshake: check that the "
                     f"URL's path is the WebSocket endpoint and that no proxy strips the "
                     f"Upgrade headers.")
        steps.append(_address_step(spec))
    elif reason == "driver_missing":
        pass  # the checker says which package to install
    elif reason == "unknown_kind":
        steps.append(f"Set `kind` of service {spec.name} to one of postgresql, redis, "
                     f"clickhouse, http, websocket, tcp.")
    else:
        steps.append(f"Check the logs of {spec.name} at {host}:{port}.")
        steps.append(_address_step(spec))
    return steps


def blocked_steps(name: str, roots: Sequence[str]) -> list[str]:
    """The steps for service ``name``, blocked by the unhealthy ``roots``: fix those first."""
    names = ", ".join(roots) if roots else "its dependencies"
    return [(f"Fix {names} first: {name} depends on it (see the steps for {names}); "
             f"then check {name} again.")]


def _start_steps(spec: ServiceSpec, host: str, port: int | str) -> list[str]:
    start = spec.extra.get("start_command") if spec.extra else None
    steps: list[str] = []
    if spec.start:
        from .cmdline import shown_command

        steps.append(f"Start {spec.name} with `netra-rm up {spec.name}`, which runs its configured start "
                     f"command `{shown_command(spec, spec.start)}` (and starts what it depends on first).")
        return steps
    compose = spec.origin.compose
    if compose is not None:
        steps.append(f"Start it with Docker Compose: `{compose.command} up -d {compose.service}` "
                     f"({spec.name}'s address came from the compose service {compose.service}).")
        return steps
    socket = _socket_of(spec)
    if start:
        steps.append(f"Start {spec.name}: `{start}`.")
    elif spec.kind == "postgresql" and socket:
        steps.append(f"Start PostgreSQL with its socket in {socket} on port {port}: "
                     f"`pg_ctl -D <datadir> -o \"-k {socket} -p {port}\" start`.")
    elif spec.kind == "redis" and socket:
        steps.append(f"Start Redis on the socket {socket}: `redis-server --unixsocket {socket}` "
                     f"(add `--requirepass <password>` if the URL has one).")
    elif spec.kind == "postgresql":
        steps.append(f"Start PostgreSQL on port {port}: `pg_ctl -D <datadir> -o \"-p {port}\" "
                     f"start` (or `sudo systemctl start postgresql`).")
    elif spec.kind == "redis":
        steps.append(f"Start Redis on port {port}: `redis-server --port {port}` "
                     f"(add `--requirepass <password>` if the URL has one).")
    elif spec.kind == "clickhouse":
        steps.append(f"Start ClickHouse with its HTTP interface on port {port}: "
                     f"`clickhouse-server --config-file=<config.xml>` "
                     f"(http_port {port} in that file).")
    else:
        steps.append(f"Start {spec.name} so that it listens on {host}:{port}.")
    return steps


def _auth_steps(spec: ServiceSpec, host: str, port: int | str, user: str | None,
                database: str | None) -> list[str]:
    setting = _setting(spec)
    title = _TITLES.get(spec.kind, spec.name)
    check = _check_command(spec, host, port, user, database)
    if not _has_password(spec):
        if spec.kind == "redis":
            step = (f"Redis at {host}:{port} requires a password (its requirepass) and {setting} has none: "
                    f"add it to {setting}, after `redis://:` and before `@{host}:{port}`.")
        else:
            who = f"user {user!r}" if user else "its user"
            step = (f"{title} at {host}:{port} wants a password for {who} and {setting} has none: add it to "
                    f"{setting} after the user name (`{user or 'USER'}:` then the password, percent-encoded, "
                    f"before `@`).")
        return [step, *check]
    who = f"user {user!r} and the password" if user else "the password"
    return [(f"{title} at {host}:{port} rejected {who} that {setting} gives: put the right password "
             f"(and user) in {setting}; netra-rm does not show the one it has."), *check]


def _check_command(spec: ServiceSpec, host: str, port: int | str, user: str | None,
                   database: str | None) -> list[str]:
    """A command that checks credentials by hand, asking for the password."""
    socket = _socket_of(spec)
    if spec.kind == "postgresql":
        where = f"-h {socket} -p {port}" if socket else f"-h {host} -p {port}"
        who = f" -U {user}" if user else ""
        return [f"Check them with `psql {where}{who} -d {database or 'postgres'} -c 'SELECT 1'`, which "
                f"asks for the password (or reads PGPASSWORD)."]
    if spec.kind == "redis":
        where = f"-s {socket}" if socket else f"-h {host} -p {port}"
        who = f" --user {user}" if user else ""
        return [f"Check a password with `redis-cli {where}{who} --askpass ping`, which asks for it: PONG "
                f"means it is right."]
    return []


def _database_steps(spec: ServiceSpec, host: str, port: int | str, user: str | None,
                    database: str | None) -> list[str]:
    name = database or "<database>"
    if spec.kind == "postgresql":
        who = f" -U {user}" if user else ""
        create = f"`createdb -h {host} -p {port}{who} {name}`"
    elif spec.kind == "clickhouse":
        create = f"`clickhouse-client --host {host} --query 'CREATE DATABASE {name}'`"
    else:
        create = f"create database {name!r}"
    return [(f"Database {name!r} does not exist on {host}:{port}: create it with {create}, "
            f"or name an existing one in {_setting(spec)}.")]


def _address_step(spec: ServiceSpec) -> str:
    """Where the address came from, and what to change when the service runs elsewhere."""
    origin = spec.origin
    shown = mask_url(spec.url)
    name = spec.name
    if origin.compose is not None:
        compose = origin.compose
        how = {"engine": "its running container (`docker compose ps`)",
               "compose": f"the project as `{compose.command} config` resolves it",
               "file": "the compose file, read by netra-rm without a Compose CLI"}.get(compose.via, compose.via)
        return (f"Its address ({shown}) came from Docker Compose: the port the compose service {compose.service} "
                f"publishes, from {how}; the user, password and database come from {_setting(spec)}. If "
                f"{compose.service} is not {name}, name the right one in discovery.compose.services.{name}.")
    variable = origin.variable or spec.url_env
    if origin.source == "environment":
        return f"Its address comes from {variable} (now {shown}); change {variable} if {name} runs elsewhere."
    if origin.source == "defaults":
        unset = f"{variable} is not set and " if variable else ""
        where = f"set {variable} (or services.{name}.url in a configuration file given with --config)" \
            if variable else f"set services.{name}.url in a configuration file given with --config"
        return (f"Its address ({shown}) is netra-rm's built-in default: {unset}no configuration file names "
                f"{name}; {where} if {name} runs elsewhere.")
    file = f" in {origin.file}" if origin.file else " in the configuration"
    unset = f"; {variable} is not set" if variable and origin.file else ""
    also = f", or set {variable}," if variable else ""
    return (f"Its address is services.{name}.url{file} (now {shown}){unset}; change it there{also} if {name} "
            f"runs elsewhere.")


def _setting(spec: ServiceSpec) -> str:
    """The setting that holds the service's URL (its credentials and database), to name in a fix."""
    origin = spec.origin
    variable = origin.variable or spec.url_env
    if origin.source == "environment" and variable:
        return variable
    if origin.source == "defaults":
        return variable or f"services.{spec.name}.url in a configuration file (--config)"
    file = f" in {origin.file}" if origin.file else ""
    return f"services.{spec.name}.url{file}" + (f" (or {variable})" if variable else "")


def _health_target(spec: ServiceSpec) -> str:
    if spec.kind == "http":
        path = spec.health_path or "/health"
        return f"GET {path} on {mask_url(spec.url)}"
    return f"{spec.name} at {mask_url(spec.url)}"


def _example_url(spec: ServiceSpec, *, with_password: bool = False) -> str:
    host, port, user, database = _where(spec)
    cred = ""
    if with_password:
        cred = f"{user or 'USER'}:PASSWORD@" if spec.kind != "redis" else ":PASSWORD@"
    if spec.kind == "postgresql":
        return f"postgresql://{cred}{host}:{port}/{database or 'DBNAME'}"
    if spec.kind == "redis":
        return f"redis://{cred}{host}:{port}/0"
    if spec.kind == "clickhouse":
        return f"http://{cred}{host}:{port}/{database or 'default'}"
    if spec.kind == "websocket":
        return f"ws://{cred}{host}:{port}/PATH"
    if spec.kind == "tcp":
        return f"tcp://{host}:{port}"
    return f"http://{cred}{host}:{port}"


def _has_password(spec: ServiceSpec) -> bool:
    try:
        return urlsplit(spec.url).password is not None
    except ValueError:
        return False


def _socket_of(spec: ServiceSpec) -> str | None:
    """The Unix socket a URL names: redis-py's ``unix:///path``, or libpq's socket
    directory (``postgresql://u@/db?host=/run/postgresql``); None for host and port."""
    try:
        parts = urlsplit(spec.url)
    except ValueError:
        return None
    if parts.scheme.lower() == "unix":
        return parts.path or None
    directory = parse_qs(parts.query).get("host", [""])[0]
    return directory if not parts.hostname and directory.startswith("/") else None


def _where(spec: ServiceSpec) -> tuple[str, int | str, str | None, str | None]:
    """Host, port, user and database of ``spec.url``, tolerant of a malformed URL."""
    try:
        parts = urlsplit(spec.url)
        host = parts.hostname or _socket_of(spec) or "HOST"
        default = 443 if parts.scheme in ("https", "wss") else _DEFAULT_PORTS.get(spec.kind)
        query_port = parse_qs(parts.query).get("port", [""])[0]
        port: int | str = parts.port or (int(query_port) if query_port.isdigit() else None) or default or "PORT"
        user = parts.username
        path = parts.path.strip("/")
    except ValueError:
        return "HOST", "PORT", None, None
    database: str | None = None
    if spec.kind in ("postgresql", "clickhouse") and path:
        database = path.split("/")[0]
    return host, port, user, database
