"""A small, real service stack for the CI-integration tests (OpenMetrics, GitHub format,
pytest plugin): a configuration whose ``web`` service is an HTTP stub that answers,
whose ``cache`` is a Redis URL (with a password) on a closed loopback port, and whose
``app`` depends on ``cache`` and so is blocked. The default layers and services are
removed, so nothing depends on what happens to run on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import StubServer, closed_port

#: The password in ``cache``'s URL: tests assert it never reaches any output.
SECRET = "ci-S3cret-5e1f"

STACK_CONFIG = """
layers:
  fast_feedback: null
  core_integration: null
  service_integration: null
  e2e_background: null
  tiny:
    description: needs nothing
    services: []
    pool: {{memory_mb: 300, cpu_percent: 30, instances: 3}}
  webonly:
    description: needs only the web service
    services: [web]
    pool: {{memory_mb: 600, cpu_percent: 60, instances: 2}}
  api:
    description: needs the web service and the app
    services: [web, app]
    pool: {{memory_mb: 1024, cpu_percent: 50, instances: 4}}
services:
  postgresql: null
  redis: null
  clickhouse: null
  auth: null
  backend: null
  frontend: null
  websocket: null
  web: {{kind: http, url: "{web}", health_path: /health, depends_on: []}}
  cache: {{kind: redis, url: "redis://:{secret}@127.0.0.1:{closed}/0", depends_on: []}}
  app: {{kind: http, url: "{web}", health_path: /health, depends_on: [cache]}}
limits: {{max_memory_mb: 100000, max_cpu_percent: 100, max_parallel_instances: 1000}}
machine: {{check_memory: false}}
"""


def stack_config_text(web_url: str) -> str:
    """The stack's YAML with ``web`` at ``web_url`` and ``cache`` on a closed port."""
    return STACK_CONFIG.format(web=web_url, secret=SECRET, closed=closed_port())


def write_stack_config(path: Path, web_url: str) -> Path:
    path.write_text(stack_config_text(web_url))
    return path


# -- fixtures (registered through conftest.py) ------------------------------------------------


@pytest.fixture(scope="module")
def web_server() -> Iterator[StubServer]:
    """The stack's ``web`` service: an HTTP stub that answers."""
    server = StubServer("http", name="web")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack(write_config: Any, web_server: StubServer) -> Path:
    """A config with a healthy ``web``, an unreachable ``cache`` and ``app`` blocked by it."""
    return write_config(stack_config_text(web_server.url))
