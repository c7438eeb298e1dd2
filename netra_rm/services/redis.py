"""The ``redis`` checker (redis-py): ``PING`` must answer ``PONG``, with the URL's AUTH.

``NOAUTH`` and ``WRONGPASS`` are authentication failures (terminal); ``LOADING`` means
Redis is reading its data set and will answer later (transient).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ServiceCheckError
from ._check import Address, Probe, os_error_reason, parse_address, reason_from_text, run_probe
from .result import ServiceResult
from .spec import ServiceSpec

SCHEMES: dict[str, int | None] = {"redis": 6379, "rediss": 6379, "unix": None}

# No CLIENT SETINFO round trips: redis-py >= 7.1 says so with driver_info=None, older
# versions with lib_name/lib_version=None.
_NO_SETINFO: dict[str, Any] = (
    {"driver_info": None} if "driver_info" in inspect.signature(redis_py.Redis.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def check(spec: ServiceSpec) -> ServiceResult:
    """PING ``spec.url`` and report ``redis_version``."""
    return run_probe(spec, probe)


def probe(spec: ServiceSpec) -> Probe:
    """AUTH (from the URL), PING, INFO server; raises :class:`ServiceCheckError` on failure."""
    address = parse_address(spec, SCHEMES)
    with redis_errors(spec, address):
        client = redis_py.Redis.from_url(
            spec.url,
            socket_connect_timeout=spec.connect_timeout,
            socket_timeout=spec.timeout,
            retry=Retry(NoBackoff(), 0),  # redis-py retries 3 times by default: one try here
            health_check_interval=0,
            **_NO_SETINFO,
        )
        try:
            if client.ping() is not True:
                raise ServiceCheckError(f"{spec.name} at {address.hostport}: PING did not "
                                        f"answer PONG", reason="bad_reply")
            version = _server_version(client)
        finally:
            client.close()
    return Probe(version=version, method="redis-py")


def _server_version(client: redis_py.Redis) -> str | None:
    """``redis_version`` from INFO; None where an ACL or a renamed command forbids INFO."""
    try:
        info = client.info("server")
    except redis_py.ResponseError:
        return None
    version = info.get("redis_version") if isinstance(info, dict) else None
    return str(version) if version is not None else None


@contextlib.contextmanager
def redis_errors(spec: ServiceSpec, address: Address) -> Iterator[None]:
    """Translate redis-py errors into :class:`ServiceCheckError` naming the service."""
    where = f"{spec.name} at {address.hostport}"
    try:
        yield
    except redis_py.AuthenticationError as exc:
        raise ServiceCheckError(f"{where}: authentication failed ({_auth_text(exc, address)})",
                                terminal=True, reason="auth") from None
    except redis_py.exceptions.AuthenticationWrongNumberOfArgsError as exc:
        raise ServiceCheckError(f"{where}: authentication failed ({exc})", terminal=True,
                                reason="auth") from None
    except redis_py.BusyLoadingError as exc:
        raise ServiceCheckError(f"{where}: LOADING: {exc}", reason="loading") from None
    except redis_py.TimeoutError:
        raise ServiceCheckError(f"{where}: no answer within {spec.timeout:g} s",
                                reason="timeout") from None
    except redis_py.ConnectionError as exc:
        found = os_error_reason(exc)
        reason, terminal, text = found if found else reason_from_text(str(exc), "redis-py failed")
        raise ServiceCheckError(f"{where}: {text}", terminal=terminal, reason=reason) from None
    except ValueError as exc:  # from_url on a URL it cannot use
        raise ServiceCheckError(f"{where}: malformed URL: {exc}", terminal=True,
                                reason="bad_url") from None
    except redis_py.ResponseError as exc:
        text = str(exc)
        if text.upper().startswith(("NOAUTH", "WRONGPASS")) or "password" in text.lower():
            raise ServiceCheckError(f"{where}: authentication failed ({text})", terminal=True,
                                    reason="auth") from None
        raise ServiceCheckError(f"{where}: {text}", reason="bad_reply") from None
    except redis_py.RedisError as exc:
        raise ServiceCheckError(f"{where}: {exc}", reason="error") from None


def _auth_text(exc: BaseException, address: Address) -> str:
    """The server's error word (redis-py strips it) and what it means."""
    text = str(exc).lower()
    if address.password is None or "authentication required" in text or "noauth" in text \
            or "must be called with the client already authenticated" in text:
        return "NOAUTH: the server requires a password and the URL has none"
    return f"WRONGPASS: {exc}"


