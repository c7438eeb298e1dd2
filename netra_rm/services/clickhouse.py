"""The ``clickhouse`` kind: HTTP ``/ping`` must answer ``Ok.``, then an authenticated ``SELECT 1``.

The query first goes over ClickHouse's plain HTTP interface, which every version
speaks and which tells the server's version. Where the server is new enough for
clickhouse-connect (19.17 added the ``system.settings.readonly`` column that its client
reads on start), ``SELECT 1`` then goes through clickhouse-connect too, and the
result's ``method`` says ``clickhouse-connect``; on older servers, such as the 18.16 in
Debian's ``clickhouse-server`` package, it says ``http``. A newer server that
clickhouse-connect still cannot talk to falls back to ``http`` as well, and is
remembered for the rest of the process.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError

from .http import client_for, httpx_errors
from .kind import ServiceKind, Where
from .probe import Address, Probe, os_error_reason, parse_address, reason_from_text

if TYPE_CHECKING:  # httpx itself is imported by the probe (through .http)
    import httpx

METHOD_CONNECT = "clickhouse-connect"
METHOD_HTTP = "http"
#: The oldest server clickhouse-connect's client can start against (system.settings.readonly).
CLICKHOUSE_CONNECT_MIN_VERSION = (19, 17)

# ClickHouse error codes: 192 UNKNOWN_USER, 193 WRONG_PASSWORD, 194 REQUIRED_PASSWORD,
# 516 AUTHENTICATION_FAILED; 81 UNKNOWN_DATABASE.
_AUTH_CODES = {192, 193, 194, 516}
_UNKNOWN_DATABASE_CODE = 81
_CODE = re.compile(r"Code:\s*(\d+)")

_too_old_lock = threading.Lock()
_too_old: set[str] = set()  # base URLs whose server clickhouse-connect cannot talk to

# clickhouse-connect logs warnings; without a handler they would reach stderr.
logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())


class ClickHouse(ServiceKind):
    """ClickHouse, checked over its HTTP interface (and clickhouse-connect where it can)."""

    name = "clickhouse"
    title = "ClickHouse"
    schemes: ClassVar[Mapping[str, int | None]] = {"http": 8123, "https": 8443, "clickhouse": 8123}
    drivers: ClassVar[Mapping[str, str]] = {"httpx": "httpx"}  # clickhouse-connect is optional
    database_in_path = True
    container_port = 8123
    images = ("clickhouse",)

    def probe(self, spec: ServiceSpec) -> Probe:
        """``/ping``, then ``SELECT 1``; raises :class:`ServiceCheckError` on any failure."""
        address = parse_address(spec, self.schemes)
        base = _base_url(address)
        where = f"{spec.name} at {address.hostport}"
        with httpx_errors(spec, where), client_for(spec, base) as client:
            ping = client.get(base + "/ping")
            if ping.status_code != 200 or ping.text.strip() != "Ok.":
                raise ServiceCheckError(f"{where}: /ping answered {ping.status_code} "
                                        f"{ping.text.strip()[:60]!r}, not 'Ok.'", reason="bad_reply")
            over_http = _query_over_http(spec, address, client, base)
        if base in _too_old or not _supports_clickhouse_connect(over_http.version):
            return over_http
        found = _query_with_clickhouse_connect(spec, address)
        if found is None:
            with _too_old_lock:
                _too_old.add(base)
            return over_http
        return found

    def start_step(self, spec: ServiceSpec, where: Where) -> str:
        return (f"Start ClickHouse with its HTTP interface on port {where.port}: "
                f"`clickhouse-server --config-file=<config.xml>` (http_port {where.port} in that file).")

    def create_database(self, spec: ServiceSpec, where: Where, database: str) -> str:
        return f"`clickhouse-client --host {where.host} --query 'CREATE DATABASE {database}'`"

    def example_url(self, where: Where) -> str:
        return f"http://{where.host}:{where.port}/{where.database or 'default'}"


KIND = ClickHouse()


def _supports_clickhouse_connect(version: str | None) -> bool:
    numbers = re.findall(r"\d+", version or "")[:2]
    if len(numbers) < 2:
        return False
    return (int(numbers[0]), int(numbers[1])) >= CLICKHOUSE_CONNECT_MIN_VERSION


def _query_with_clickhouse_connect(spec: ServiceSpec, address: Address) -> Probe | None:
    """The query through clickhouse-connect, or None when it cannot talk to this server."""
    try:
        import clickhouse_connect
        from clickhouse_connect.driver import exceptions as ch_errors
    except ImportError:
        return None
    with _clickhouse_connect_errors(spec, address, ch_errors):
        client = clickhouse_connect.get_client(
            host=address.host,
            port=address.port,
            username=address.username or "default",
            password=address.password or "",
            database=_database(address) or None,
            secure=address.scheme == "https",
            connect_timeout=spec.connect_timeout,
            send_receive_timeout=spec.timeout,
            query_retries=0,
            autogenerate_session_id=False,
            dedicated_pool=True,
        )
        try:
            value = client.command("SELECT 1")
            version = client.server_version
        finally:
            client.close()
        if str(value).strip() != "1":
            raise ServiceCheckError(f"{spec.name}: SELECT 1 returned {value!r}", reason="bad_reply")
        return Probe(version=version, method=METHOD_CONNECT)
    return None  # reached only when the server is too old for clickhouse-connect


def _query_over_http(spec: ServiceSpec, address: Address, client: httpx.Client,
                     base: str) -> Probe:
    """``SELECT 1, version()`` over ClickHouse's plain HTTP interface (any server version)."""
    params = {"query": "SELECT 1, version() FORMAT TabSeparated"}
    database = _database(address)
    if database:
        params["database"] = database
    headers = {"X-ClickHouse-User": address.username or "default"}
    if address.password:
        headers["X-ClickHouse-Key"] = address.password
    response = client.get(base + "/", params=params, headers=headers)
    text = response.text.strip()
    if response.status_code != 200:
        raise _server_error(spec, address, response.status_code, text)
    one, _, version = text.partition("\t")
    if one != "1":
        raise ServiceCheckError(f"{spec.name}: SELECT 1 returned {text[:60]!r}", reason="bad_reply")
    return Probe(version=version or None, method=METHOD_HTTP)


@contextlib.contextmanager
def _clickhouse_connect_errors(spec: ServiceSpec, address: Address,
                               ch_errors: ModuleType) -> Iterator[None]:
    """Translate clickhouse-connect errors; a server too old for it is swallowed (fallback)."""
    try:
        yield
    except ServiceCheckError:
        raise
    except ch_errors.ClickHouseError as exc:
        text = str(exc)
        status = _http_status(text)
        code = _error_code(text)
        if code in _AUTH_CODES or status in (401, 403) or code == _UNKNOWN_DATABASE_CODE:
            raise _server_error(spec, address, status or 500, text) from None
        if status is not None:  # the server answered, but not in a way clickhouse-connect knows
            return
        found = os_error_reason(exc)
        if found is None:
            found = reason_from_text(text, "clickhouse-connect failed")
        reason, terminal, what = found
        raise ServiceCheckError(f"{spec.name} at {address.hostport}: {what}", terminal=terminal,
                                reason=reason) from None


def _server_error(spec: ServiceSpec, address: Address, status: int, text: str) -> ServiceCheckError:
    where = f"{spec.name} at {address.hostport}"
    code = _error_code(text)
    if code in _AUTH_CODES or status in (401, 403):
        user = address.username or "default"
        return ServiceCheckError(f"{where}: authentication failed for user {user!r}",
                                 terminal=True, reason="auth")
    if code == _UNKNOWN_DATABASE_CODE:
        return ServiceCheckError(f"{where}: database {_database(address)!r} does not exist",
                                 terminal=True, reason="unknown_database")
    first = text.splitlines()[0] if text else ""
    return ServiceCheckError(f"{where}: query failed with HTTP {status}: {first[:200]}",
                             reason="bad_reply")


def _base_url(address: Address) -> str:
    scheme = "https" if address.scheme == "https" else "http"
    return f"{scheme}://{address.hostport}"


def _database(address: Address) -> str:
    return address.path.strip("/").split("/")[0]


def _error_code(text: str) -> int | None:
    match = _CODE.search(text)
    return int(match.group(1)) if match else None


def _http_status(text: str) -> int | None:
    match = re.search(r"HTTP status (\d{3})", text)
    return int(match.group(1)) if match else None


