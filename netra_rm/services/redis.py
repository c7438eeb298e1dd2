"""The ``redis`` kind (redis-py): ``PING`` must answer ``PONG``, with the URL's AUTH.

``NOAUTH`` and ``WRONGPASS`` are authentication failures (terminal); ``LOADING`` means
Redis is reading its data set and will answer later (transient). redis-py is imported by
the probe, not with this module.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError

from .kind import ServiceKind, Where
from .probe import Address, Probe, os_error_reason, parse_address, reason_from_text

if TYPE_CHECKING:
    import redis as redis_py


class Redis(ServiceKind):
    """Redis (and servers that speak its protocol), checked with ``PING``."""

    name = "redis"
    title = "Redis"
    schemes: ClassVar[Mapping[str, int | None]] = {"redis": 6379, "rediss": 6379, "unix": None}
    drivers: ClassVar[Mapping[str, str]] = {"redis": "redis"}
    container_port = 6379
    images = ("redis", "valkey", "keydb")

    def probe(self, spec: ServiceSpec) -> Probe:
        """AUTH (from the URL), PING, INFO server; raises :class:`ServiceCheckError` on failure."""
        import redis as redis_py
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        address = parse_address(spec, self.schemes)
        with redis_errors(spec, address):
            client = redis_py.Redis.from_url(
                spec.url,
                socket_connect_timeout=spec.connect_timeout,
                socket_timeout=spec.timeout,
                retry=Retry(NoBackoff(), 0),  # redis-py retries 3 times by default: one try here
                health_check_interval=0,
                **_no_setinfo(),
            )
            try:
                if client.ping() is not True:
                    raise ServiceCheckError(f"{spec.name} at {address.hostport}: PING did not "
                                            f"answer PONG", reason="bad_reply")
                version = _server_version(client)
            finally:
                client.close()
        return Probe(version=version, method="redis-py")

    def start_step(self, spec: ServiceSpec, where: Where) -> str:
        if where.socket:
            return (f"Start Redis on the socket {where.socket}: `redis-server --unixsocket {where.socket}` "
                    f"(add `--requirepass <password>` if the URL has one).")
        return (f"Start Redis on port {where.port}: `redis-server --port {where.port}` "
                f"(add `--requirepass <password>` if the URL has one).")

    def missing_password_step(self, spec: ServiceSpec, where: Where, setting: str) -> str:
        return (f"Redis at {where.host}:{where.port} requires a password (its requirepass) and {setting} has "
                f"none: add it to {setting}, after `redis://:` and before `@{where.host}:{where.port}`.")

    def credentials_check(self, spec: ServiceSpec, where: Where) -> list[str]:
        place = f"-s {where.socket}" if where.socket else f"-h {where.host} -p {where.port}"
        who = f" --user {where.user}" if where.user else ""
        return [f"Check a password with `redis-cli {place}{who} --askpass ping`, which asks for it: PONG "
                f"means it is right."]

    def example_url(self, where: Where) -> str:
        return f"redis://{where.host}:{where.port}/0"


KIND = Redis()


@lru_cache(maxsize=1)
def _no_setinfo() -> dict[str, Any]:
    """No CLIENT SETINFO round trips: redis-py >= 7.1 says so with driver_info=None, older
    versions with lib_name/lib_version=None."""
    import redis as redis_py

    if "driver_info" in inspect.signature(redis_py.Redis.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


def _server_version(client: redis_py.Redis) -> str | None:
    """``redis_version`` from INFO; None where an ACL or a renamed command forbids INFO."""
    import redis as redis_py

    try:
        info = client.info("server")
    except redis_py.ResponseError:
        return None
    version = info.get("redis_version") if isinstance(info, dict) else None
    return str(version) if version is not None else None


@contextlib.contextmanager
def redis_errors(spec: ServiceSpec, address: Address) -> Iterator[None]:
    """Translate redis-py errors into :class:`ServiceCheckError` naming the service."""
    import redis as redis_py

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
