"""The ``http`` kind (httpx): GET the health path, judge the status and maybe a JSON field.

Healthy means an expected status (any 2xx unless ``expect_status`` says otherwise) and,
when ``json_field`` is set, that dotted path into the JSON body equals ``json_value``.
A JSON answer's top-level ``version`` becomes the result's version. 401 and 403 are
terminal authentication failures; other statuses are transient. httpx is imported by the
probe, not with this module.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from netra_rm.config.service import ServiceSpec
from netra_rm.errors import ServiceCheckError
from netra_rm.redact import mask_url

from .kind import ServiceKind
from .probe import Probe, os_error_reason, parse_address

if TYPE_CHECKING:
    import httpx

# httpx imports its own command-line client (click, rich, pygments) when those are
# installed, as they are beside netra-rm: ~30 ms per start for a client we never use.
# A None entry makes that optional import fail, so httpx skips it.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

DEFAULT_HEALTH_PATH = "/health"
_MISSING = object()

_ssl_lock = threading.Lock()
_ssl_context: Any = None


class Http(ServiceKind):
    """An HTTP service with a health endpoint (``health_path``, ``expect_status``, ``json_field``)."""

    name = "http"
    schemes: ClassVar[Mapping[str, int | None]] = {"http": 80, "https": 443}
    drivers: ClassVar[Mapping[str, str]] = {"httpx": "httpx"}

    def probe(self, spec: ServiceSpec) -> Probe:
        """One GET; raises :class:`ServiceCheckError` unless the answer is a healthy one."""
        address = parse_address(spec, self.schemes)  # a malformed URL is terminal, before any I/O
        url = health_url(spec.url, spec.health_path)
        with httpx_errors(spec, f"{spec.name} at {address.hostport}"), \
                client_for(spec, url) as client:
            response = client.get(url, headers={"Accept": "application/json, */*;q=0.5"})
        where = f"{spec.name}: GET {response.request.url.copy_with(username=None, password=None)}"
        if not _status_ok(spec, response.status_code):
            expected = ", ".join(map(str, spec.expect_status)) or "2xx"
            auth = response.status_code in (401, 403) and response.status_code not in spec.expect_status
            raise ServiceCheckError(f"{where} answered {response.status_code}, expected {expected}",
                                    terminal=auth, reason="auth" if auth else "bad_status")
        body = _json_body(response) if spec.json_field or _is_json(response) else _MISSING
        if spec.json_field:
            if body is _MISSING:
                raise ServiceCheckError(f"{where} answered {response.status_code} but the body is "
                                        f"not JSON", reason="bad_body")
            actual = json_path(body, spec.json_field)
            if actual is _MISSING:
                raise ServiceCheckError(f"{where}: the JSON answer has no field "
                                        f"{spec.json_field!r}", reason="bad_body")
            if actual != spec.json_value:
                raise ServiceCheckError(f"{where}: {spec.json_field} is {actual!r}, expected "
                                        f"{spec.json_value!r}", reason="bad_body")
        version = body.get("version") if isinstance(body, dict) else None
        return Probe(version=str(version) if version is not None else None, method="http")

    def health_target(self, spec: ServiceSpec) -> str:
        return f"GET {spec.health_path or DEFAULT_HEALTH_PATH} on {mask_url(spec.url)}"


KIND = Http()


def health_url(base: str, health_path: str | None) -> str:
    """``base`` joined with ``health_path`` (default ``/health``; a full URL is kept as is)."""
    path = DEFAULT_HEALTH_PATH if health_path is None else health_path
    if "://" in path:
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


def json_path(body: Any, dotted: str) -> Any:
    """The value at ``dotted`` (``a.b.0.c``) in ``body``, or a sentinel when absent."""
    node = body
    for key in dotted.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.lstrip("-").isdigit() and -len(node) <= int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


def client_for(spec: ServiceSpec, url: str) -> httpx.Client:
    """An httpx client bounded by the spec's timeouts.

    Plain ``http://`` skips loading the CA bundle (tens of ms per client); ``https://``
    shares one verifying SSL context per process. Proxy variables are not consulted:
    the services checked are local to the test run.
    """
    import httpx

    verify: Any = _shared_ssl_context() if url.lower().startswith("https:") else False
    return httpx.Client(
        timeout=httpx.Timeout(spec.timeout, connect=spec.connect_timeout),
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": "netra-rm"},
    )


@contextlib.contextmanager
def httpx_errors(spec: ServiceSpec, where: str | None = None) -> Iterator[None]:
    """Translate httpx errors into :class:`ServiceCheckError` naming the service (``where``)."""
    import httpx

    where = where or spec.name
    try:
        yield
    except httpx.TimeoutException as exc:
        connecting = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
        text = (f"no connection within {spec.connect_timeout:g} s" if connecting
                else f"connected, but no answer within {spec.timeout:g} s")
        raise ServiceCheckError(f"{where}: {text}", reason="timeout") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ServiceCheckError(f"{where}: malformed URL: {exc}", terminal=True,
                                reason="bad_url") from None
    except httpx.RemoteProtocolError as exc:
        raise ServiceCheckError(f"{where}: not a valid HTTP answer: {exc}",
                                reason="bad_reply") from None
    except httpx.HTTPError as exc:
        found = os_error_reason(exc)
        reason, terminal, text = found if found else ("error", False, str(exc) or type(exc).__name__)
        raise ServiceCheckError(f"{where}: {text}", terminal=terminal, reason=reason) from None


def _status_ok(spec: ServiceSpec, status: int) -> bool:
    if spec.expect_status:
        return status in spec.expect_status
    return 200 <= status < 300


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "").lower()


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _MISSING


def _shared_ssl_context() -> Any:
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            import ssl

            _ssl_context = ssl.create_default_context()
        return _ssl_context
