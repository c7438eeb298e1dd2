"""One result, one renderer: every command's --json is one envelope with schema_version,
every result kind can be drawn, and the status document is the library's, given by the
Python API too."""

from __future__ import annotations

import inspect
from pathlib import Path

from netra_rm import results
from netra_rm.render import _DRAWERS


def test_every_json_output_has_the_same_envelope(cli, small_config: Path, tmp_path: Path) -> None:
    cfg = ["--config", str(small_config)]
    granted = cli(*cfg, "allocate", "--layer", "tiny", "--category", "c", "--json")
    ident = granted.json()["id"]
    outputs = {
        "allocate": granted,
        "status": cli(*cfg, "status", "--json"),
        "layer": cli(*cfg, "layer", "tiny", "--json"),
        "verify": cli(*cfg, "verify", "--json"),
        "history": cli(*cfg, "history", "--json"),
        "recommend": cli(*cfg, "recommend", "--json"),
        "graph": cli(*cfg, "graph", "--json"),
        "config show": cli(*cfg, "config", "show", "--json"),
        "config validate": cli(*cfg, "config", "validate", str(small_config), "--json"),
        "pool show": cli(*cfg, "pool", "show", "--json"),
        "pool set": cli(*cfg, "pool", "set", "tiny", "--instances", "4", "--json"),
        "release": cli(*cfg, "release", ident, "--json"),
        "cleanup": cli(*cfg, "cleanup", "--json"),
        "ledger migrate": cli(*cfg, "ledger", "migrate", "--from", str(tmp_path / "ledger" / "ledger.json"),
                              "--to", str(tmp_path / "other.json"), "--json"),
        "up --dry-run": cli(*cfg, "up", "tiny", "--dry-run", "--json"),
    }
    for command, result in outputs.items():
        assert result.code == 0, (command, result.stderr)
        assert result.json()["schema_version"] == results.JSON_SCHEMA_VERSION, command
    assert outputs["allocate"].json()["layer"] == "tiny"  # still the allocation object
    assert outputs["release"].json()["released"] == [ident]


def test_every_result_kind_has_a_way_to_be_drawn() -> None:
    kinds = {cls.kind for _, cls in inspect.getmembers(results, inspect.isclass)
             if issubclass(cls, results.Result) and cls is not results.Result}
    assert kinds <= set(_DRAWERS), kinds - set(_DRAWERS)


def test_the_python_api_gives_the_status_document(small_config: Path, tmp_path: Path, cli) -> None:
    from netra_rm import create_resource_manager

    with create_resource_manager(enable_monitoring=False, config=str(small_config),
                                 ledger=str(tmp_path / "ledger" / "ledger.json"), env={}) as rm:
        document = rm.get_status_report()
    printed = cli("--config", str(small_config), "status", "--json").json()
    assert set(document) == set(printed) == {"schema_version", "resources", "services"}
    assert set(document["resources"]) == set(printed["resources"])
    assert set(document["services"]) == set(printed["services"])
