"""https:// and wss:// services against real TLS servers: healthy when the certificate's
CA is trusted, a terminal TLS failure saying so when it is not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from netra_rm.services import ServiceSpec, check_services

from servers import TlsStub

pytestmark = pytest.mark.services

pytest.importorskip("trustme", reason="trustme is in the test extra: pip install -e '.[test]'")


@pytest.fixture()
def tls_web(tmp_path: Path) -> Iterator[TlsStub]:
    with TlsStub("http", tmp_path / "web") as server:
        yield server


@pytest.fixture()
def tls_ws(tmp_path: Path) -> Iterator[TlsStub]:
    with TlsStub("ws", tmp_path / "ws") as server:
        yield server


def specs(web: TlsStub, ws: TlsStub) -> dict[str, ServiceSpec]:
    return {
        "web": ServiceSpec(name="web", kind="http", url=web.url, health_path="/health", connect_timeout=2.0),
        "push": ServiceSpec(name="push", kind="websocket", url=ws.url + "/ws", connect_timeout=2.0),
    }


def test_trusted_certificates_are_healthy(tls_web: TlsStub, tls_ws: TlsStub, cli, write_config,
                                          tmp_path: Path) -> None:
    config = write_config(
        "services:\n"
        f"  web: {{kind: http, url: '{tls_web.url}', health_path: /health, depends_on: []}}\n"
        f"  push: {{kind: websocket, url: '{tls_ws.url}/ws', depends_on: []}}\n"
        "layers:\n"
        "  tls: {services: [web, push], pool: {memory_mb: 100, cpu_percent: 10, instances: 1}}\n")
    # both certificates come from their own CA: trust the two through one bundle
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(tls_web.ca_file.read_text() + tls_ws.ca_file.read_text())
    result = cli("--config", str(config), "layer", "tls", "--json", env={"SSL_CERT_FILE": str(bundle)})
    assert result.code == 0, result.stdout + result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["web"]["status"] == "healthy" and services["web"]["version"] == "1.4.2"
    assert services["push"]["status"] == "healthy"


def test_an_untrusted_certificate_is_a_terminal_tls_failure(tls_web: TlsStub, tls_ws: TlsStub,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    empty = tmp_path / "no-ca.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))  # the checkers' contexts trust nothing
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    results = check_services(specs(tls_web, tls_ws), deadline=10.0)
    for name in ("web", "push"):
        result = results[name]
        assert (result.status, result.reason, result.terminal) == ("unhealthy", "tls", True), result
        assert result.error is not None and "certificate" in result.error.lower()
        assert f"localhost:{(tls_web if name == 'web' else tls_ws).port}" in result.error
        assert any("SSL_CERT_FILE" in step for step in result.remediation)
