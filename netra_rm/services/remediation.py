"""Steps a person can follow to make an unhealthy service healthy, per failure.

Pure text built from the spec: no I/O, no driver imports, and every URL shown masked.
The steps are the same for every kind; what only a kind knows (how to start one, how to
check a password by hand, how to create a database) comes from its
:class:`~netra_rm.services.kind.ServiceKind`. Each step names where the address came from
(the variable that is set, the configuration file and key, the built-in defaults, or the
Compose service), so the person changes the right thing; a fix never quotes a masked
secret back, and every command shown is one a person can paste (the `psql` and
`redis-cli` checks are run against real servers in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from netra_rm.config.kinds import kind_names
from netra_rm.config.service import ServiceSpec
from netra_rm.redact import mask_url

from .kind import ServiceKind, Where, kind_or_default


def remediation_for(spec: ServiceSpec, reason: str, *,
                    blocked_by: Sequence[str] = ()) -> list[str]:
    """The steps for ``spec`` failing with ``reason`` (a :class:`ServiceResult` reason word).

    ``blocked_by`` names the root causes when ``reason`` is ``"blocked"``.
    """
    if reason == "ok":
        return []
    if reason == "blocked":
        return blocked_steps(spec.name, blocked_by)
    if reason == "unknown_kind":
        return [f"Set `kind` of service {spec.name} to one of {', '.join(kind_names())}."]
    kind = kind_or_default(spec.kind)
    where = where_of(spec, kind)
    host, port = where.host, where.port
    title = kind.title_for(spec)
    steps: list[str] = []
    if reason in ("refused", "reset", "unreachable"):
        steps.extend(_start_steps(spec, kind, where))
        steps.append(_address_step(spec))
    elif reason == "timeout":
        steps.append(
            f"{spec.name} at {host}:{port} accepts connections but did not answer within "
            f"{spec.timeout:g} s: it may be hung, overloaded or still starting, or that port "
            f"belongs to something that is not {title}; check its logs."
        )
        steps.append(_address_step(spec))
    elif reason == "auth":
        steps.extend(_auth_steps(spec, kind, where))
    elif reason == "unknown_database":
        name = where.database or "<database>"
        steps.append(f"Database {name!r} does not exist on {host}:{port}: create it with "
                     f"{kind.create_database(spec, where, name)}, or name an existing one in {_setting(spec)}.")
    elif reason == "dns":
        steps.append(f"The host {host!r} cannot be resolved: fix the host name.")
        steps.append(_address_step(spec))
    elif reason == "bad_url":
        steps.append(f"Fix the address of {spec.name}: expected {kind.example_url(where)}.")
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
        steps.append(f"{kind.health_target(spec)} did not answer as a healthy {title} would: check the logs of "
                     f"{spec.name}, and that its address points at {spec.name} itself.")
        steps.append(_address_step(spec))
    elif reason == "bad_handshake":
        steps.append(f"{host}:{port} did not complete a WebSocket handshake: check that the "
                     f"URL's path is the WebSocket endpoint and that no proxy strips the "
                     f"Upgrade headers.")
        steps.append(_address_step(spec))
    elif reason == "driver_missing":
        pass  # the checker says which package to install
    else:
        steps.append(f"Check the logs of {spec.name} at {host}:{port}.")
        steps.append(_address_step(spec))
    return steps


def blocked_steps(name: str, roots: Sequence[str]) -> list[str]:
    """The steps for service ``name``, blocked by the unhealthy ``roots``: fix those first."""
    names = ", ".join(roots) if roots else "its dependencies"
    return [(f"Fix {names} first: {name} depends on it (see the steps for {names}); "
             f"then check {name} again.")]


def _start_steps(spec: ServiceSpec, kind: ServiceKind, where: Where) -> list[str]:
    if spec.start:
        from netra_rm.config.commands import shown_command

        return [f"Start {spec.name} with `netra-rm up {spec.name}`, which runs its configured start "
                f"command `{shown_command(spec, spec.start)}` (and starts what it depends on first)."]
    compose = spec.origin.compose
    if compose is not None:
        return [f"Start it with Docker Compose: `{compose.command} up -d {compose.service}` "
                f"({spec.name}'s address came from the compose service {compose.service})."]
    return [kind.start_step(spec, where)]


def _auth_steps(spec: ServiceSpec, kind: ServiceKind, where: Where) -> list[str]:
    setting = _setting(spec)
    check = kind.credentials_check(spec, where)
    if not _has_password(spec):
        return [kind.missing_password_step(spec, where, setting), *check]
    who = f"user {where.user!r} and the password" if where.user else "the password"
    return [(f"{kind.title_for(spec)} at {where.host}:{where.port} rejected {who} that {setting} gives: put the "
             f"right password (and user) in {setting}; netra-rm does not show the one it has."), *check]


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


def _has_password(spec: ServiceSpec) -> bool:
    try:
        return urlsplit(spec.url).password is not None
    except ValueError:
        return False


def socket_of(spec: ServiceSpec) -> str | None:
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


def where_of(spec: ServiceSpec, kind: ServiceKind) -> Where:
    """Host, port, user, database and socket of ``spec.url``, tolerant of a malformed URL."""
    socket = socket_of(spec)
    try:
        parts = urlsplit(spec.url)
        host = parts.hostname or socket or "HOST"
        default = 443 if parts.scheme in ("https", "wss") else kind.usual_port
        query_port = parse_qs(parts.query).get("port", [""])[0]
        port: int | str = parts.port or (int(query_port) if query_port.isdigit() else None) or default or "PORT"
        user = parts.username
        path = parts.path.strip("/")
    except ValueError:
        return Where("HOST", "PORT", socket=socket)
    database = path.split("/")[0] if kind.database_in_path and path else None
    return Where(host, port, user, database, socket)
