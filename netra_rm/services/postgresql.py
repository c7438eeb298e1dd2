"""The ``postgresql`` kind (psycopg): log in with the URL's credentials and run ``SELECT 1``.

Bad credentials and a missing database are terminal (waiting will not fix them); a
refused connection, a server still starting up or too many clients are transient.
psycopg is imported by the probe, not with this module.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, ClassVar

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError

from .kind import ServiceKind, Where
from .probe import Address, Probe, os_error_reason, parse_address

if TYPE_CHECKING:
    import psycopg

# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_AUTH_STATES = {"28P01", "28000"}  # invalid_password, invalid_authorization_specification
_UNKNOWN_DATABASE = "3D000"  # invalid_catalog_name
_TRANSIENT_STATES = {"57P03": "starting", "53300": "too_many_connections", "57P01": "shutting_down"}


class PostgreSQL(ServiceKind):
    """PostgreSQL, checked by logging in and running ``SELECT 1``."""

    name = "postgresql"
    title = "PostgreSQL"
    schemes: ClassVar[Mapping[str, int | None]] = {"postgresql": 5432, "postgres": 5432}
    drivers: ClassVar[Mapping[str, str]] = {"psycopg": "'psycopg[binary]'"}
    socket_file = ".s.PGSQL.{port}"  # in the directory a host=/path query names
    database_in_path = True
    container_port = 5432
    images = ("postgres", "postgis", "timescaledb", "pgvector")

    def probe(self, spec: ServiceSpec) -> Probe:
        """Log in and query; raises :class:`ServiceCheckError` on any failure."""
        import psycopg

        address = parse_address(spec, self.schemes, socket_file=self.socket_file)
        # libpq counts whole seconds and treats anything below 2 as 2; the rounds
        # enforce the spec's exact timeout by abandoning the check.
        connect_timeout = max(2, math.ceil(spec.connect_timeout))
        with psycopg_errors(spec, address), \
                psycopg.connect(spec.url, connect_timeout=connect_timeout, autocommit=True,
                                application_name="netra-rm") as conn:
            row = conn.execute("SELECT 1").fetchone()
            version = conn.info.parameter_status("server_version")
        if not row or row[0] != 1:
            raise ServiceCheckError(f"{spec.name}: SELECT 1 returned {row!r}", reason="bad_reply")
        if isinstance(version, bytes):  # older psycopg returns bytes
            version = version.decode()
        return Probe(version=version or None, method="psycopg")

    def start_step(self, spec: ServiceSpec, where: Where) -> str:
        if where.socket:
            return (f"Start PostgreSQL with its socket in {where.socket} on port {where.port}: "
                    f"`pg_ctl -D <datadir> -o \"-k {where.socket} -p {where.port}\" start`.")
        return (f"Start PostgreSQL on port {where.port}: `pg_ctl -D <datadir> -o \"-p {where.port}\" "
                f"start` (or `sudo systemctl start postgresql`).")

    def credentials_check(self, spec: ServiceSpec, where: Where) -> list[str]:
        place = f"-h {where.socket} -p {where.port}" if where.socket else f"-h {where.host} -p {where.port}"
        who = f" -U {where.user}" if where.user else ""
        return [f"Check them with `psql {place}{who} -d {where.database or 'postgres'} -c 'SELECT 1'`, which "
                f"asks for the password (or reads PGPASSWORD)."]

    def create_database(self, spec: ServiceSpec, where: Where, database: str) -> str:
        who = f" -U {where.user}" if where.user else ""
        return f"`createdb -h {where.host} -p {where.port}{who} {database}`"

    def example_url(self, where: Where) -> str:
        return f"postgresql://{where.host}:{where.port}/{where.database or 'DBNAME'}"


KIND = PostgreSQL()


@contextlib.contextmanager
def psycopg_errors(spec: ServiceSpec, address: Address) -> Iterator[None]:
    """Translate psycopg errors into :class:`ServiceCheckError` naming the service."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise _translate(spec, address, exc) from None


def _translate(spec: ServiceSpec, address: Address, exc: psycopg.Error) -> ServiceCheckError:
    import psycopg

    where = f"{spec.name} at {address.hostport}"
    text = _server_message(exc)
    lowered = str(exc).lower()
    state = exc.sqlstate
    database = address.path.strip("/").split("/")[0] or address.username or "(default)"
    user = address.username or "(default)"
    if isinstance(exc, psycopg.ProgrammingError) and not state:
        return ServiceCheckError(f"{where}: malformed connection URL: {text}", terminal=True,
                                 reason="bad_url")
    if state in _AUTH_STATES or "password authentication failed" in lowered \
            or "no password supplied" in lowered or "authentication failed" in lowered:
        return ServiceCheckError(f"{where}: authentication failed for user {user!r}",
                                 terminal=True, reason="auth")
    if state == _UNKNOWN_DATABASE or ("database" in lowered and "does not exist" in lowered):
        return ServiceCheckError(f"{where}: database {database!r} does not exist",
                                 terminal=True, reason="unknown_database")
    if state in _TRANSIENT_STATES or "starting up" in lowered or "shutting down" in lowered:
        reason = _TRANSIENT_STATES.get(state or "", "starting")
        return ServiceCheckError(f"{where}: {text}", reason=reason)
    found = os_error_reason(exc)
    if found:
        reason, terminal, what = found
        return ServiceCheckError(f"{where}: {what}", terminal=terminal, reason=reason)
    if "connection refused" in lowered:
        return ServiceCheckError(f"{where}: connection refused", reason="refused")
    if "no such file or directory" in lowered and address.socket_path is not None:
        return ServiceCheckError(f"{where}: no server listening on the socket", reason="refused")
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return ServiceCheckError(f"{where}: cannot resolve host", terminal=True, reason="dns")
    if "timeout" in lowered or "timed out" in lowered:
        return ServiceCheckError(f"{where}: no answer within the connect timeout",
                                 reason="timeout")
    return ServiceCheckError(f"{where}: {text}", reason="error")


def _server_message(exc: BaseException) -> str:
    """The useful part of psycopg's message, e.g. ``the database system is starting up``.

    libpq prefixes it with the attempt it came from (``connection to server at ...
    failed: FATAL:  ...``) and may add hints on further lines.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    message = lines[0].rsplit("failed: ", 1)[-1].strip()
    for prefix in ("FATAL:", "ERROR:"):
        if message.startswith(prefix):
            message = message[len(prefix):].strip()
    return message or lines[0]
