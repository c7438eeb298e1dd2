"""The README's CI recipes, run: every shell line of the GitHub Actions job and of the
GitLab CI job, in order, in a small project, against real PostgreSQL and Redis.

The jobs are read from the README itself, so a recipe that stops working fails here.
What a CI service provides is stood in for: the service containers by the test servers
(their URLs replace the job's DATABASE_URL and REDIS_URL), GITHUB_STEP_SUMMARY by a file,
and ``pip install netra-rm`` by the netra-rm under test (that line is checked, not run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from servers import Server

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INSTALL_LINE = "pip install netra-rm"

SUITE = '''
import os

import psycopg
import pytest


def test_database_answers():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_runs_holding_a_slot(request):
    if request.config.getoption("netra_layer"):  # under the pytest plugin
        allocation = request.getfixturevalue("netra_allocation")
        assert allocation.layer == "core_integration"
    else:  # under `netra-rm run`
        assert os.environ["NETRA_RM_LAYER"] == "core_integration"
        assert os.environ["NETRA_RM_ALLOCATION_ID"]
'''


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


def recipe(first_line: str) -> dict[str, Any]:
    """The README's YAML block that starts with ``first_line``, parsed."""
    blocks = [b for b in fenced_blocks(README.read_text(), "yaml") if b.startswith(first_line + "\n")]
    assert len(blocks) == 1, f"README.md should hold exactly one ```yaml block starting {first_line!r}"
    return yaml.safe_load(blocks[0])


@dataclass(frozen=True)
class Shell:
    code: int
    output: str


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with an integration suite that uses the database."""
    root = tmp_path / "project"
    (root / "tests" / "integration").mkdir(parents=True)
    (root / "tests" / "integration" / "test_db.py").write_text(SUITE)
    return root


@pytest.fixture
def ci_env(home: Path, ledger_path: Path, tmp_path: Path, pg_server: Server, redis_server: Server
           ) -> dict[str, str]:
    """What the job's shell sees, less the job's own variables: netra-rm and pytest on PATH."""
    bin_dir = str(Path(shutil.which("netra-rm") or Path(sys.executable).with_name("netra-rm")).parent)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, str(Path(sys.executable).parent),
                                                    os.environ.get("PATH", "")]),
            "NETRA_RM_LEDGER": str(ledger_path), "CI": "true",
            "DATABASE_URL": pg_server.url, "REDIS_URL": redis_server.url}


def job_env(variables: Mapping[str, Any], ci_env: Mapping[str, str]) -> dict[str, str]:
    """The job's variables, with the service URLs pointing at the test servers."""
    assert {"DATABASE_URL", "REDIS_URL"} <= set(variables), "the job should say where its services are"
    return {**{k: str(v) for k, v in variables.items()}, **ci_env}


def sh(script: str, env: Mapping[str, str], cwd: Path) -> Shell:
    """Run a CI shell script the way the runners do: bash, stop at the first failure."""
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=str(cwd),
                          env=dict(env), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    return Shell(proc.returncode, proc.stdout + proc.stderr)


def without_install(lines: list[str]) -> list[str]:
    kept = [line for line in lines if line != INSTALL_LINE]
    assert len(kept) == len(lines) - 1, f"the job should install netra-rm with `{INSTALL_LINE}`"
    return kept


def assert_metrics_file(path: Path) -> None:
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    up = {s.labels["service"]: s.value for s in families["netra_rm_service_up"].samples}
    assert up["postgresql"] == 1 and up["redis"] == 1


def ledger_is_empty(ledger_path: Path) -> bool:
    from netra_rm.ledger import open_ledger

    return not open_ledger(str(ledger_path)).read().allocations


# -- GitHub Actions ----------------------------------------------------------------------

def test_github_actions_job(project: Path, ci_env: dict[str, str], tmp_path: Path, ledger_path: Path) -> None:
    workflow = recipe("# .github/workflows/integration.yml")
    (job,) = workflow["jobs"].values()
    assert {"postgres", "redis"} <= set(job["services"])
    summary = tmp_path / "step_summary.md"
    env = {**job_env(job["env"], ci_env), "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}

    runs = [step["run"].strip() for step in job["steps"] if "run" in step]
    uses = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/upload-artifact"]
    outputs = []
    for script in without_install(runs):
        result = sh(script, env, project)
        assert result.code == 0, f"step failed:\n{script}\n{result.output}"
        outputs.append(result.output)

    gate, suite, metrics = outputs
    assert gate == "netra-rm: layer core_integration is ready\n"
    assert "2 passed" in suite
    assert metrics == ""
    assert "## netra-rm layer `core_integration`: ✅ ready" in summary.read_text()
    assert "| `postgresql` | ✅ healthy |" in summary.read_text()
    artifact = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact"))
    assert_metrics_file(project / artifact["with"]["path"])
    assert ledger_is_empty(ledger_path)  # `netra-rm run` gave the slot back


def test_github_gate_fails_with_annotations(project: Path, ci_env: dict[str, str], tmp_path: Path) -> None:
    """The gate step with Redis down: `::error` lines name it, and the step fails."""
    workflow = recipe("# .github/workflows/integration.yml")
    (job,) = workflow["jobs"].values()
    gate = next(step["run"] for step in job["steps"] if "netra-rm layer" in step.get("run", ""))
    env = {**job_env(job["env"], ci_env), "REDIS_URL": "redis://127.0.0.1:1/0"}

    result = sh(gate.replace("--timeout 120", "--timeout 0"), env, project)

    assert result.code == 1
    assert "::error title=netra-rm%3A layer core_integration%3A redis unhealthy::service redis is unhealthy" \
        in result.output


# -- GitLab CI ---------------------------------------------------------------------------

def test_gitlab_ci_job(project: Path, ci_env: dict[str, str], ledger_path: Path) -> None:
    pipeline = recipe("# .gitlab-ci.yml")
    (job,) = [v for k, v in pipeline.items() if isinstance(v, dict) and "script" in v]
    assert {s["alias"] for s in job["services"]} == {"postgres", "redis"}
    env = job_env(job["variables"], ci_env)

    script = sh("\n".join(without_install(job["script"])), env, project)
    after = sh("\n".join(job["after_script"]), env, project)

    assert script.code == 0, script.output
    assert after.code == 0, after.output
    assert "2 passed" in script.output
    reports = job["artifacts"]["reports"]
    assert_metrics_file(project / reports["metrics"])
    assert "<testsuite" in (project / reports["junit"]).read_text()
    assert ledger_is_empty(ledger_path)


# -- the other shell lines of the CI sections ---------------------------------------------

def test_textfile_collector_line(project: Path, ci_env: dict[str, str], tmp_path: Path) -> None:
    (line,) = [b.strip() for b in fenced_blocks(README.read_text(), "sh") if "--output /var/lib/node_exporter" in b]
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    result = sh(line.replace("/var/lib/node_exporter/textfile", str(textfile)), ci_env, project)
    assert result.code == 0, result.output
    assert_metrics_file(textfile / "netra-rm.prom")


def test_pytest_plugin_line(project: Path, ci_env: dict[str, str], ledger_path: Path) -> None:
    pytest.importorskip("xdist")
    (line,) = [b.strip() for b in fenced_blocks(README.read_text(), "sh") if "--netra-layer" in b]
    result = sh(line + " -p no:cacheprovider", ci_env, project)
    assert result.code == 0, result.output
    assert "2 passed" in result.output
    assert ledger_is_empty(ledger_path)  # the four workers' allocations were given back
