"""``--format github``: what a GitHub Actions log and step summary show.

Failures are ``::error`` workflow commands (one per service that is not healthy, root
causes first, remediation steps in the message); the Markdown summary is appended to
``$GITHUB_STEP_SUMMARY`` when that is set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_stack import SECRET


@pytest.fixture
def summary(tmp_path: Path) -> Path:
    """A step-summary file that an earlier step already wrote to."""
    path = tmp_path / "step_summary.md"
    path.write_text("## an earlier step\n\n")
    return path


def errors(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("::error")]


def test_status_prints_an_error_per_unhealthy_service(cli, stack: Path) -> None:
    result = cli("--config", str(stack), "status", "--format", "github")

    assert result.code == 0  # status reports; gating is `layer`'s job
    lines = errors(result.stdout)
    assert [line.split("::")[1] for line in lines] == [
        "error title=netra-rm%3A cache unhealthy", "error title=netra-rm%3A app blocked"]
    cache, app = lines
    assert "::service cache is unhealthy: " in cache
    assert "connection refused" in cache
    assert "%0A- Start Redis" in cache  # remediation, on lines of its own in the annotation
    assert "::service app is blocked: blocked by cache" in app
    assert result.stdout.splitlines()[-1] == "netra-rm: 1 of 3 services healthy, 0 active allocations"
    assert SECRET not in result.stdout + result.stderr


def test_status_appends_a_markdown_summary(cli, stack: Path, summary: Path) -> None:
    result = cli("--config", str(stack), "status", "--format", "github",
                 env={"GITHUB_STEP_SUMMARY": str(summary)})

    assert result.code == 0
    text = summary.read_text()
    assert text.startswith("## an earlier step\n\n## netra-rm status\n")
    assert "1 of 3 services healthy; 0 active allocations." in text
    assert "| `web` | ✅ healthy |" in text
    assert "| `cache` | ❌ unhealthy |" in text
    assert "| `app` | ❌ blocked |" in text and "blocked by cache" in text
    assert "| `tiny` | 0/300 MB | 0/30% | 0/3 |" in text
    assert "**cache**:" in text and "- Start Redis" in text
    assert SECRET not in text


def test_without_the_variable_no_summary_is_written(cli, stack: Path, tmp_path: Path) -> None:
    result = cli("--config", str(stack), "status", "--format", "github")
    assert result.code == 0
    assert not list(tmp_path.rglob("*.md"))


def test_layer_not_ready_exits_1_with_errors_and_summary(cli, stack: Path, summary: Path) -> None:
    result = cli("--config", str(stack), "layer", "api", "--format", "github",
                 env={"GITHUB_STEP_SUMMARY": str(summary)})

    assert result.code == 1
    lines = errors(result.stdout)
    assert len(lines) == 2
    assert lines[0].startswith("::error title=netra-rm%3A layer api%3A cache unhealthy::service cache is unhealthy")
    assert lines[1].startswith("::error title=netra-rm%3A layer api%3A app blocked::service app is blocked")
    assert result.stdout.splitlines()[-1] == "netra-rm: layer api is NOT ready"
    assert result.stderr == ""  # the annotations carry the remediation; no second copy in the log
    text = summary.read_text()
    assert "## netra-rm layer `api`: ❌ not ready" in text
    assert "| `cache` | ❌ unhealthy |" in text
    assert SECRET not in result.stdout + text


def test_layer_ready_prints_no_error(cli, stack: Path, summary: Path) -> None:
    result = cli("--config", str(stack), "layer", "webonly", "--format", "github",
                 env={"GITHUB_STEP_SUMMARY": str(summary)})

    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout == "netra-rm: layer webonly is ready\n"
    assert "## netra-rm layer `webonly`: ✅ ready" in summary.read_text()


def test_layer_without_room_says_so(cli, stack: Path) -> None:
    for _ in range(3):
        assert cli("--config", str(stack), "allocate", "--layer", "tiny", "--category", "unit").code == 0

    result = cli("--config", str(stack), "layer", "tiny", "--format", "github")

    assert result.code == 1
    (line,) = errors(result.stdout)
    assert line.startswith("::error title=netra-rm%3A layer tiny has no room::layer tiny has no room:%0A- ")
    assert "instances: all 3 in use" in line


def test_layer_json_and_github_disagree(cli, stack: Path) -> None:
    result = cli("--config", str(stack), "--json", "layer", "tiny", "--format", "github")
    assert result.code == 2
    assert "--json and --format github" in result.stderr


def test_workflow_command_escaping() -> None:
    from netra_rm.render.github import command

    assert command("error", "50% done\r\nnext", title="a: b, c") == "::error title=a%3A b%2C c::50%25 done%0D%0Anext"
    assert command("warning", "plain") == "::warning::plain"


@pytest.mark.parametrize("args, verdict", [(("layer", "fast_feedback"), 0), (("status",), 0)])
def test_a_summary_that_cannot_be_written_is_a_warning_not_a_verdict(cli, tmp_path: Path, args: tuple[str, ...],
                                                                     verdict: int) -> None:
    missing = tmp_path / "no-such-directory" / "summary.md"
    result = cli(*args, "--format", "github", env={"GITHUB_STEP_SUMMARY": str(missing),
                                                   "DATABASE_URL": "postgresql://u:pw@127.0.0.1:9/x"})
    assert result.code == verdict, result.stderr
    assert "warning: cannot write the step summary" in result.stderr
    assert "No such file or directory" in result.stderr
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert not missing.parent.exists()
