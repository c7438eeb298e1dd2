"""The pytest plugin, driven through a real inner pytest (``pytester``): the layer gate,
the session's allocation (one per xdist worker), the ``netra_allocation`` fixture and the
``netra_services`` marker.

Services are real (an HTTP stub that answers; a Redis URL on a closed loopback port),
and so is the ledger, in tmp_path: what the inner session holds is read back from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # noqa: F401 - see below

from ci_stack import SECRET, stack_config_text
from servers import StubServer, closed_port

pytest_plugins = ["pytester"]

# pytester's in-process runs drop the modules an inner session imported. PyYAML's C loader
# cannot be imported twice in one process, so it is imported here, once, before any run.


@pytest.fixture
def stack(home: Path, ledger_path: Path, tmp_path: Path, web_server: StubServer,
          monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CI stack's config, named by NETRA_RM_CONFIG; the ledger in tmp_path."""
    config = tmp_path / "stack.yaml"
    config.write_text(stack_config_text(web_server.url))
    monkeypatch.setenv("NETRA_RM_CONFIG", str(config))
    monkeypatch.setenv("NETRA_RM_LEDGER", str(ledger_path))
    return config


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the inner sessions record their allocations (ALLOCATIONS_DIR)."""
    path = tmp_path / "allocations"
    path.mkdir()
    monkeypatch.setenv("ALLOCATIONS_DIR", str(path))
    return path


def ledger_ids(ledger_path: Path) -> list[str]:
    """The allocations in the ledger now (read as the CLI would, reclaiming nothing)."""
    from netra_rm.ledger import open_ledger

    return [a.id for a in open_ledger(str(ledger_path)).read().allocations]


HOLDS_ALLOCATION = """
import json, os
from netra_rm.ledger import open_ledger

def test_holds_its_allocation(netra_allocation):
    held = {a.id: a for a in open_ledger(os.environ["NETRA_RM_LEDGER"]).read().allocations}
    assert netra_allocation.id in held
    assert held[netra_allocation.id].slot == netra_allocation.slot
    assert held[netra_allocation.id].fencing_token == netra_allocation.fencing_token
    assert held[netra_allocation.id].owner.pid is not None  # reclaimed if pytest dies
    print("ALLOCATION", json.dumps(netra_allocation.to_dict()))
"""


# -- the session gate and the allocation -------------------------------------------------

def test_session_holds_one_allocation_and_releases_it(pytester: pytest.Pytester, stack: Path,
                                                      ledger_path: Path) -> None:
    pytester.makepyfile(HOLDS_ALLOCATION)

    result = pytester.runpytest("--netra-layer", "webonly", "--netra-category", "api_tests", "-s")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["netra-rm: layer webonly ready; holding allocation * (slot 0, fencing token *)"])
    line = next(text for text in result.stdout.lines if "ALLOCATION " in text)
    allocation = json.loads(line.split("ALLOCATION ", 1)[1])
    assert allocation["layer"] == "webonly" and allocation["category"] == "api_tests"
    assert allocation["slot"] == 0 and allocation["fencing_token"] > 0 and allocation["worker"] == "main"
    assert allocation["memory_mb"] == 300  # the layer's share: 600 MB over 2 instances
    assert ledger_ids(ledger_path) == []  # released when the session ended


def test_ini_options_work_like_the_command_line(pytester: pytest.Pytester, stack: Path, ledger_path: Path) -> None:
    pytester.makeini("[pytest]\nnetra_layer = tiny\nnetra_category = from_ini\n")
    pytester.makepyfile("def test_it(netra_allocation):\n"
                        "    assert (netra_allocation.layer, netra_allocation.category) == ('tiny', 'from_ini')\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert ledger_ids(ledger_path) == []


def test_missing_services_stop_the_session_with_remediation(pytester: pytest.Pytester, stack: Path,
                                                            ledger_path: Path) -> None:
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError('ran')\n")

    result = pytester.runpytest("--netra-layer", "api")

    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "netra-rm: layer api is not ready: cache, app unavailable; no test was run.",
        "missing: cache at 127.0.0.1:*: connection refused",
        "  - Start Redis on port *",
        "missing: app: blocked by cache*",
    ])
    result.stdout.no_fnmatch_line("*ran*")
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()
    assert SECRET not in result.stdout.str() + result.stderr.str()
    assert ledger_ids(ledger_path) == []


def test_timeout_waits_for_the_service_to_come_up(pytester: pytest.Pytester, stack: Path, tmp_path: Path,
                                                  web_server: StubServer, ledger_path: Path) -> None:
    port = closed_port()
    config = tmp_path / "late.yaml"
    config.write_text(stack_config_text(f"http://127.0.0.1:{port}"))
    pytester.makepyfile("def test_runs(netra_allocation):\n    assert netra_allocation.layer == 'webonly'\n")
    late = StubServer("http", name="late-web")
    late.port = port
    proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netra-layer", "webonly",
                           "--netra-timeout", "60", "--netra-config", str(config)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        seen = []
        for raw in proc.stdout:  # start the server only once the plugin says it is waiting
            seen.append(raw.decode())
            if "waiting up to 60s" in seen[-1]:
                break
        assert "netra-rm: layer webonly is not ready (missing: web); waiting up to 60s\n" in seen, seen
        late.start()
        rest = proc.stdout.read().decode()
        assert proc.wait(timeout=120) == 0, "".join(seen) + rest
        assert "1 passed" in rest
    finally:
        late.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ledger_ids(ledger_path) == []


def test_no_room_stops_the_session(pytester: pytest.Pytester, stack: Path, cli, ledger_path: Path) -> None:
    taken = [cli("allocate", "--layer", "tiny", "--category", "other").stdout.strip() for _ in range(3)]
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError('ran')\n")

    result = pytester.runpytest("--netra-layer", "tiny")

    assert result.ret == 1
    result.stdout.fnmatch_lines(["netra-rm: no capacity for pytest in layer tiny: *instances: all 3 in use*"])
    assert sorted(ledger_ids(ledger_path)) == sorted(taken)  # nothing of ours left, nothing of theirs lost


def test_unknown_layer_is_a_usage_error(pytester: pytest.Pytester, stack: Path) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--netra-layer", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: netra-rm: unknown layer 'nope'; valid layers: tiny, webonly, api*"])


def test_fixture_without_a_layer_says_what_to_do(pytester: pytest.Pytester, stack: Path) -> None:
    pytester.makepyfile("def test_x(netra_allocation):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*netra_allocation needs a layer: run pytest with --netra-layer NAME*"])


def test_without_a_layer_the_plugin_does_nothing(pytester: pytest.Pytester, stack: Path, ledger_path: Path) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--netra-layer", "api", "--collect-only")  # collecting needs no services
    assert result.ret == 0
    pytester.runpytest().assert_outcomes(passed=1)
    assert not ledger_path.exists()


# -- xdist: one allocation per worker ----------------------------------------------------

WRITES_PER_WORKER = """
import json, os
from pathlib import Path
import pytest

@pytest.fixture(scope="session", autouse=True)
def record(netra_allocation):
    out = Path(os.environ["ALLOCATIONS_DIR"]) / (netra_allocation.worker + ".json")
    out.write_text(json.dumps(netra_allocation.to_dict()))

@pytest.mark.parametrize("n", range(8))
def test_many(n, netra_allocation):
    assert netra_allocation.worker == os.environ["PYTEST_XDIST_WORKER"]
"""


def test_xdist_gives_each_worker_its_own_allocation(pytester: pytest.Pytester, stack: Path, out: Path,
                                                    ledger_path: Path) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(WRITES_PER_WORKER)

    result = pytester.runpytest_subprocess("-n", "2", "--netra-layer", "api", "--netra-config", str(stack),
                                           "-p", "no:cacheprovider")

    # api needs app, which is blocked: the controller stops the session before any worker starts
    assert result.ret == 1
    result.stdout.fnmatch_lines(["netra-rm: layer api is not ready*"])
    assert list(out.iterdir()) == []

    result = pytester.runpytest_subprocess("-n", "2", "--netra-layer", "tiny", "--netra-config", str(stack),
                                           "-p", "no:cacheprovider")

    result.assert_outcomes(passed=8)
    held = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    assert [a["worker"] for a in held] == ["gw0", "gw1"]
    assert len({a["id"] for a in held}) == 2
    assert sorted(a["slot"] for a in held) == [0, 1]
    assert len({a["fencing_token"] for a in held}) == 2
    assert ledger_ids(ledger_path) == []


def test_xdist_with_more_workers_than_room_stops_before_any_runs(pytester: pytest.Pytester, stack: Path,
                                                                 ledger_path: Path) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError('ran')\n")

    result = pytester.runpytest_subprocess("-n", "3", "--netra-layer", "webonly", "--netra-config", str(stack),
                                           "-p", "no:cacheprovider")

    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "netra-rm: cannot hold 3 allocations (one per xdist worker) in layer webonly: no capacity*",
        "  - Or run fewer xdist workers (-n) than the layer has room for.",
    ])
    assert ledger_ids(ledger_path) == []  # the two it could take were given back


UNDER_RUN = """
import json, os
from pathlib import Path
from netra_rm.ledger import open_ledger

def test_uses_the_allocation_of_run(netra_allocation):
    held = [a.id for a in open_ledger(os.environ["NETRA_RM_LEDGER"]).read().allocations]
    record = Path(os.environ["ALLOCATIONS_DIR"]) / (netra_allocation.worker + ".json")
    record.write_text(json.dumps({"mine": netra_allocation.id, "run": os.environ.get("NETRA_RM_ALLOCATION_ID"),
                                  "ledger": held}))
"""


def run_pytest_under_run(pytester: pytest.Pytester, layer: str, *pytest_args: str) -> subprocess.CompletedProcess[str]:
    from conftest import _entry_point

    return subprocess.run([*_entry_point(), "run", "--layer", layer, "--category", "suite", "--",
                           sys.executable, "-m", "pytest", "--netra-layer", layer, "-p", "no:cacheprovider",
                           *pytest_args], capture_output=True, text=True, cwd=pytester.path, timeout=120,
                          env=os.environ.copy())


def test_under_netra_rm_run_the_session_uses_runs_allocation(pytester: pytest.Pytester, stack: Path, cli,
                                                             out: Path, ledger_path: Path) -> None:
    pytester.makepyfile(UNDER_RUN)

    proc = run_pytest_under_run(pytester, "webonly")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "holding allocation" in proc.stdout and "of netra-rm run" in proc.stdout
    seen = json.loads((out / "main.json").read_text())
    assert seen["mine"] == seen["run"] and seen["ledger"] == [seen["run"]], "one allocation, not two"
    assert ledger_ids(ledger_path) == []
    events = cli("history", "--json").json()["events"]
    assert [e["event"] for e in events] == ["grant", "release"]


def test_under_netra_rm_run_xdist_workers_take_one_allocation_fewer(pytester: pytest.Pytester, stack: Path, cli,
                                                                   out: Path, ledger_path: Path) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(WRITES_PER_WORKER)

    # webonly has two instances: run's allocation and one more, for two workers
    proc = run_pytest_under_run(pytester, "webonly", "-n", "2")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    held = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert sorted(held) == ["gw0", "gw1"]
    grants = [e for e in cli("history", "--json").json()["events"] if e["event"] == "grant"]
    assert len(grants) == 2, "run's allocation and one more, not three"
    assert {a["id"] for a in held.values()} == {g["id"] for g in grants}
    assert ledger_ids(ledger_path) == []


def test_an_allocation_of_another_layer_or_gone_is_not_used(pytester: pytest.Pytester, stack: Path,
                                                            ledger_path: Path, out: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(UNDER_RUN)
    for ident, layer in (("aaaaaaaaaaaa", "webonly"), ("bbbbbbbbbbbb", "tiny")):
        monkeypatch.setenv("NETRA_RM_ALLOCATION_ID", ident)
        monkeypatch.setenv("NETRA_RM_LAYER", layer)
        result = pytester.runpytest_subprocess("--netra-layer", "webonly", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        seen = json.loads((out / "main.json").read_text())
        assert seen["mine"] != ident and seen["ledger"] == [seen["mine"]]
    assert ledger_ids(ledger_path) == []


# -- the marker --------------------------------------------------------------------------

MARKED = """
import pytest

@pytest.mark.netra_services("web")
def test_web_is_up():
    pass

@pytest.mark.netra_services("cache")
def test_needs_cache():
    raise AssertionError("body ran")

@pytest.mark.netra_services("app")
def test_needs_app():
    raise AssertionError("body ran")

@pytest.mark.netra_services("cache", on_missing="fail")
def test_must_have_cache():
    raise AssertionError("body ran")

@pytest.mark.netra_services("web")
class TestGroup:
    def test_in_class(self):
        pass
"""


def test_marker_skips_with_the_reason_by_default(pytester: pytest.Pytester, stack: Path) -> None:
    pytester.makepyfile(test_marked=MARKED)

    result = pytester.runpytest("-rsE")

    result.assert_outcomes(passed=2, skipped=2, errors=1)  # failing setup, before any fixture runs
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] test_marked.py:*: netra-rm: service cache is unhealthy (cache at 127.0.0.1:*: "
        "connection refused)",  # at the test's own location
        "SKIPPED [[]1[]] test_marked.py:*: netra-rm: service app is blocked by cache",
        "ERROR test_marked.py::test_must_have_cache - Failed: netra-rm: service cache is unhealthy*",
    ])
    result.stdout.no_fnmatch_line("*body ran*")
    assert SECRET not in result.stdout.str()


@pytest.mark.parametrize("how", [("--netra-missing", "fail"), ("-o", "netra_missing=fail")])
def test_marker_fails_when_configured(pytester: pytest.Pytester, stack: Path, how: tuple[str, str]) -> None:
    pytester.makepyfile(test_marked=MARKED)

    result = pytester.runpytest(*how)

    result.assert_outcomes(passed=2, errors=3)
    result.stdout.fnmatch_lines(["*netra-rm: service cache is unhealthy*", "*- Start Redis on port*"])
    result.stdout.no_fnmatch_line("*body ran*")


def test_marker_with_an_unknown_service_fails_naming_the_valid_ones(pytester: pytest.Pytester, stack: Path) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.netra_services('nosuch')\ndef test_x():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*netra_services: unknown service 'nosuch'; valid services: web, cache, app*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.netra_services(*names, on_missing=None): skip the test*"])
    help_text = pytester.runpytest("--help").stdout.str()
    for option in ("--netra-layer=NAME", "--netra-timeout=S", "--netra-missing={skip,fail}"):
        assert option in help_text


# -- packaging and cost ------------------------------------------------------------------

def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    from importlib.metadata import entry_points

    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("netra_rm") == "netra_rm.pytest_plugin"


def test_importing_the_plugin_loads_nothing_else_of_netra_rm(home: Path) -> None:
    probe = ("import sys\nimport netra_rm.pytest_plugin\n"
             "print(sorted(m for m in sys.modules if m.startswith('netra_rm') or m in ('rich', 'yaml', 'typer', "
             "'psutil', 'httpx', 'redis', 'psycopg')))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['netra_rm', 'netra_rm.pytest_plugin']"


LOSES_ALLOCATION = """
import json, os, subprocess, sys, time

def test_loses_it(netra_allocation):
    subprocess.run([sys.executable, "-m", "netra_rm", "release", netra_allocation.id], check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the plugin has noticed (it journals the loss)
        lines = open(os.environ["NETRA_RM_LEDGER"] + ".journal").read()
        if '"event":"lost"' in lines:
            return
        time.sleep(0.05)

def test_not_run_after_the_loss():
    raise AssertionError("ran")
"""


def test_a_lost_allocation_fails_the_session_with_its_cause(pytester: pytest.Pytester, stack: Path,
                                                             ledger_path: Path) -> None:
    pytester.makepyfile(LOSES_ALLOCATION)
    result = pytester.runpytest_subprocess("--netra-layer", "webonly", "-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*netra-rm: allocation * (webonly/pytest) was lost while the pytest session ran: "
                                 "it was released by another process*"])
    assert "1 passed" in result.stdout.str() and "failed" not in result.stdout.str(), "the session stopped"
    assert ledger_ids(ledger_path) == []


def test_netra_requires_is_a_gate(pytester: pytest.Pytester, stack: Path, ledger_path: Path) -> None:
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError('ran')\n")
    result = pytester.runpytest("--netra-layer", "webonly", "--netra-requires", "cache")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["netra-rm: service cache is unavailable: *"])
    assert ledger_ids(ledger_path) == []
