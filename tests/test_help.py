"""Every command has help that ends with an example a user can paste, and every command
appears in the README.

The commands are read from the Typer application itself, so a new command is covered
without touching this file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from netra_rm.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if getattr(command, "hidden", False):
            continue
        found.append(((*path, name), command))
        if hasattr(command, "commands"):
            found += _commands(command, (*path, name))
    return found


ROOT_COMMAND = typer.main.get_command(app)
COMMANDS = _commands(ROOT_COMMAND)
IDS = [" ".join(path) for path, _ in COMMANDS]


def _example(command: Any) -> str:
    """The help's last line, which must be ``Example: netra-rm ...``."""
    lines = [line.strip() for line in (command.help or "").strip().splitlines() if line.strip()]
    assert lines, "the command has no help"
    assert lines[-1].startswith("Example: "), f"the help should end with 'Example: ...', not {lines[-1]!r}"
    return lines[-1][len("Example: "):]


def _invocation(example: str) -> list[str]:
    """The first ``netra-rm ...`` command in an example, without what pipes or redirects follow."""
    text = example.replace("$(", " ").replace(")", " ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    tokens = list(lexer)
    start = tokens.index("netra-rm")
    words = []
    for token in tokens[start + 1:]:
        if token in ("|", "||", "&&", ";", ">", ">>", "<", "&"):
            break
        words.append(token)
    return words


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_there_are_commands_to_check() -> None:
    assert {"status", "layer", "allocate", "release", "run", "cleanup", "monitor", "graph", "config",
            "config show", "config validate"} <= set(IDS)


@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_help_ends_with_an_example_that_uses_real_options(path: tuple[str, ...], command: Any) -> None:
    example = _example(command)
    words = _invocation(example)
    global_options = _options(ROOT_COMMAND)
    assert words[:len(path)] == list(path), (
        f"the example should run `netra-rm {' '.join(path)}`: {example}")
    own = _options(command) | global_options | {"--help", "-h"}
    before_separator = words[:words.index("--")] if "--" in words else words
    unknown = [w.split("=")[0] for w in before_separator if w.startswith("-") and w.split("=")[0] not in own]
    assert not unknown, f"the example uses options `netra-rm {' '.join(path)}` does not have: {unknown}"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_help_prints_and_shows_the_example(cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})

    assert result.code == 0
    assert result.stderr == ""
    assert "Example:" in result.stdout
    assert "netra-rm" in result.stdout.split("Example:", 1)[1]


def test_top_level_help_lists_every_command(cli) -> None:
    result = cli("--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.code == 0
    for path, _ in COMMANDS:
        if len(path) == 1:
            assert re.search(rf"│ {re.escape(path[0])}\s", result.stdout), path[0]


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_every_command_appears_in_the_readme(path: tuple[str, ...]) -> None:
    assert f"netra-rm {' '.join(path)}" in README.read_text(), (
        f"README.md should show `netra-rm {' '.join(path)}`")


# -- the help and the README say the same ------------------------------------------------

def _visible_options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option" and not getattr(p, "hidden", False)
            and "--help" not in p.opts]


OPTIONS = [(path, option) for path, command in COMMANDS for option in _visible_options(command)]


@pytest.mark.parametrize("path, option", OPTIONS, ids=[f"{' '.join(p)} {o.opts[0]}" for p, o in OPTIONS])
def test_every_option_is_in_the_readme_and_its_defaults_agree(path: tuple[str, ...], option: Any) -> None:
    readme = README.read_text()
    name = option.opts[0]
    assert name in readme, f"README.md should document `netra-rm {' '.join(path)} {name}`"
    found = re.search(r"default:? ([0-9.]+)", option.help or "")
    if found:
        stated = [m.group(1) for line in readme.splitlines() if name in line
                  for m in re.finditer(r"default:? ([0-9.]+)", line)]
        assert not stated or found.group(1) in stated, (
            f"`{' '.join(path)} {name}`: the help says default {found.group(1)}, the README {stated}")


@pytest.mark.parametrize("command", ["allocate", "run"])
def test_timeout_implies_wait_in_help_and_readme(command: str) -> None:
    option = next(o for o in ROOT_COMMAND.commands[command].params if "--timeout" in o.opts)
    assert "implies --wait" in option.help
    assert "`--timeout S` implies `--wait`" in README.read_text()


def test_verify_help_judges_by_the_limits_of_each_grant_as_the_readme_does() -> None:
    help_text = " ".join(ROOT_COMMAND.commands["verify"].help.split())
    readme = " ".join(README.read_text().split())
    assert "admitted under" in help_text and "admitted under" in readme
    assert "as configured now" not in help_text


def test_down_help_says_what_the_readme_says_about_signals() -> None:
    help_text = " ".join(ROOT_COMMAND.commands["down"].help.split())
    readme = " ".join(README.read_text().split())
    assert "without one whose start command kept running" in help_text
    assert "SIGTERM to its process group (SIGKILL after 10 s) when the service has no `stop` command" in readme


def test_the_readme_says_run_passes_every_exit_code_through() -> None:
    readme = " ".join(README.read_text().split())
    assert "pytest's 4 and 5" in readme
    help_text = " ".join(ROOT_COMMAND.commands["run"].help.split())
    assert "pytest's 4 and 5" in help_text


def test_quiet_is_documented_per_command() -> None:
    readme = README.read_text()
    section = readme[readme.index("### Quiet output"):]
    section = section[:section.index("\n## ", 1) if "\n## " in section[1:] else len(section)]
    for path, _ in COMMANDS:
        if len(path) == 1 and path[0] not in ("config", "ledger", "pool"):
            assert f"`{path[0]}`" in section, f"README's quiet section should say what `{path[0]} -q` prints"
