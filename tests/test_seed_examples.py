"""Every Python example in the seed's README runs unchanged once its import line names
``netra_rm``, against real services started by the test suite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SEED = Path(__file__).with_name("seed_README.md")
URL_VARIABLES = {"postgresql": "DATABASE_URL", "redis": "REDIS_URL", "clickhouse": "CLICKHOUSE_URL",
                 "backend": "BACKEND_URL", "auth": "AUTH_SERVICE_URL", "frontend": "FRONTEND_URL",
                 "websocket": "WEBSOCKET_URL"}


def seed_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), flags=re.S)
    return [b.replace("from test_framework.orchestration import", "from netra_rm import")
             .replace("from test_framework.layer_system import", "from netra_rm import") for b in blocks]


def test_the_seed_has_the_examples_we_expect() -> None:
    examples = seed_examples()
    assert len(examples) == 6
    assert all("test_framework" not in e for e in examples)


@pytest.fixture
def live_environment(live_servers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, variable in URL_VARIABLES.items():
        url = live_servers[name].url + ("/ws" if name == "websocket" else "")
        monkeypatch.setenv(variable, url)
    monkeypatch.setenv("NETRA_RM_LEDGER", str(tmp_path / "ledger.json"))
    monkeypatch.delenv("NETRA_RM_CONFIG", raising=False)


def test_seed_examples_run_unchanged(live_environment, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    for example in seed_examples():
        exec(compile(example, str(SEED), "exec"), namespace)  # noqa: S102 - the seed's own examples
    out = capsys.readouterr().out
    assert "Missing services" not in out
    assert "Active allocations:" in out and "Healthy services: 7" in out
    rm = namespace["rm"]
    rm.close()
    from netra_rm import create_resource_manager

    with create_resource_manager(enable_monitoring=False) as fresh:
        assert fresh.get_resource_status()["total_allocations"] == 0
