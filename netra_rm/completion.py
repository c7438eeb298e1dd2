"""Shell completion: answering a TAB quickly, and generating ``completions/``.

The scripts in ``completions/`` come from Typer's completion machinery (the same text
``netra-rm --show-completion`` prints); each calls ``netra-rm`` back with
``_NETRA_RM_COMPLETE=complete_<shell>`` on every TAB. Answering through Typer would
cost a full start (Typer, the command tree, and Rich for zsh and fish), so
:func:`respond` answers from :mod:`netra_rm.completion_table`, a plain description of
the command line generated from the Typer application, and loads neither Typer, Rich nor
a service driver. It resolves the line the way Click's completion does (a test compares
the two on many lines), and quotes descriptions so that every shell shows them as
written.

Layer names, service names and allocation ids come from the completers below, which
read the configuration and the ledger that the command line being completed would use
(``--config``/``--ledger``, else ``NETRA_RM_CONFIG``/``NETRA_RM_LEDGER``). A completer
never fails: on any problem it offers nothing, so a broken config never prints a
traceback at a prompt. Ids are not offered from a PostgreSQL ledger (that would load its
driver on every TAB).

Regenerate the committed scripts and the table after changing the command line::

    python -m netra_rm.completion            # writes completions/ and netra_rm/completion_table.py
    python -m netra_rm.completion --check    # exit 1 when either is stale
    python -m netra_rm.completion --print zsh
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from netra_rm.config.model import Config

PROG_NAME = "netra-rm"
COMPLETE_VAR = "_NETRA_RM_COMPLETE"
SHELLS: tuple[str, ...] = ("bash", "zsh", "fish")
DEFAULT_DIR = "completions"
REGENERATE = "python -m netra_rm.completion"
TABLE_PATH = Path(__file__).resolve().parent / "completion_table.py"

Candidate = tuple[str, str]


# -- the completers: plain values in, candidates out -------------------------------------

def _load_config(config_path: str | None) -> Config | None:
    try:
        from netra_rm.config.load import load_config

        return load_config(config_path)
    except Exception:  # noqa: BLE001 - completion offers nothing rather than failing
        return None


def layer_candidates(incomplete: str, *, config_path: str | None = None, **_: Any) -> list[Candidate]:
    """Layer names from the configuration, with their descriptions."""
    cfg = _load_config(config_path)
    if cfg is None:
        return []
    return [(name, layer.description or f"services: {', '.join(layer.services) or 'none'}")
            for name, layer in cfg.layers.items() if name.startswith(incomplete)]


def service_candidates(incomplete: str, *, config_path: str | None = None, **_: Any) -> list[Candidate]:
    """Service names from the configuration, with their kind and what they depend on."""
    cfg = _load_config(config_path)
    if cfg is None:
        return []
    return [(name, spec.kind + (f", needs {', '.join(spec.depends_on)}" if spec.depends_on else ""))
            for name, spec in cfg.services.items() if name.startswith(incomplete)]


def target_candidates(incomplete: str, **where: Any) -> list[Candidate]:
    """Layers, then services: what ``up`` and ``down`` take."""
    return layer_candidates(incomplete, **where) + service_candidates(incomplete, **where)


def allocation_id_candidates(incomplete: str, *, ledger: str | None = None, given: Sequence[str] = (),
                             **_: Any) -> list[Candidate]:
    """Ids of the active allocations in the ledger (not those already on the line)."""
    try:
        from netra_rm.config import env as envmod
        from netra_rm.ledger import POSTGRES_SCHEMES, open_ledger

        location = ledger or envmod.ledger_location()
        if location and str(location).partition("://")[0] in POSTGRES_SCHEMES:
            return []  # its driver costs more than a TAB may
        state = open_ledger(location).read()
    except Exception:  # noqa: BLE001 - completion offers nothing rather than failing
        return []
    now = time.time()
    return [(a.id, f"{a.layer or ','.join(a.pools)}/{a.category} slot {a.slot}") for a in state.allocations
            if a.expires_at > now and a.id.startswith(incomplete) and a.id not in given]


COMPLETERS: dict[str, Callable[..., list[Candidate]]] = {
    "layer": layer_candidates, "service": service_candidates, "target": target_candidates,
    "allocation_id": allocation_id_candidates,
}


# -- resolving a command line, as Click does ------------------------------------------------

class _Option:
    """One option of the table: (names, dest, takes a value, repeatable, hidden, help,
    choices, completer)."""

    __slots__ = ("names", "dest", "value", "multiple", "hidden", "help", "choices", "completer")

    def __init__(self, names: Sequence[str], dest: str, value: bool, multiple: bool, hidden: bool, help: str,
                 choices: Sequence[str], completer: str | None) -> None:
        self.names, self.dest, self.value, self.multiple = tuple(names), dest, value, multiple
        self.hidden, self.help, self.choices, self.completer = hidden, help, tuple(choices), completer


class _Node:
    """One command (or group) of the table, with what was parsed for it so far."""

    __slots__ = ("path", "spec", "given", "positionals")

    def __init__(self, path: str, spec: Mapping[str, Any]) -> None:
        self.path, self.spec = path, spec
        self.given: set[str] = set()
        self.positionals: list[str] = []

    @property
    def options(self) -> list[_Option]:
        return [_Option(*o) for o in self.spec["options"]]

    def option(self, name: str) -> _Option | None:
        return next((o for o in self.options if name in o.names), None)


def _table() -> Mapping[str, Mapping[str, Any]]:
    from netra_rm.completion_table import COMMANDS

    return COMMANDS


def global_options() -> dict[str, bool]:
    """The options that work before or after the command: name -> takes a value."""
    from netra_rm.completion_table import GLOBAL_OPTIONS

    return dict(GLOBAL_OPTIONS)


def value_options(path: str) -> set[str]:
    """The option names of command ``path`` ("" for the top level) that take a value."""
    return {name for o in _table()[path]["options"] for name in o[0] if o[2]}


def subcommands(path: str) -> Mapping[str, str]:
    spec = _table().get(path)
    return spec["commands"] if spec else {}


def candidates(args: Sequence[str], incomplete: str) -> list[Candidate]:
    """What to offer for ``incomplete`` after the complete words ``args`` (the program
    name not included): ``(value, description)`` pairs, as Click would offer them."""
    table = _table()
    globals_ = global_options()
    node = _Node("", table[""])
    root_values: dict[str, str] = {}
    expecting: _Option | None = None
    options_ended = False  # after `--`, or after the first argument of a command that stops there
    words = list(args)
    if incomplete == "=":
        incomplete = ""
    elif "=" in incomplete and incomplete.startswith("-"):
        name, _, incomplete = incomplete.partition("=")
        words.append(name)
    for word in words:
        if expecting is not None:
            if expecting.dest in ("config", "ledger"):
                root_values[expecting.dest] = word
            expecting = None
            continue
        if not options_ended and word == "--":
            options_ended = True
            continue
        if not options_ended and word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            option = node.option(name) or _global(table, name, globals_)
            if option is None:
                continue  # unknown: Click would stop; offering what fits is kinder
            node.given.add(option.dest)
            if option.value and not eq:
                expecting = option
            elif eq and option.dest in ("config", "ledger"):
                root_values[option.dest] = value
            continue
        if node.spec["commands"]:
            if word not in node.spec["commands"]:
                break  # not a command: offer the group's commands
            path = f"{node.path} {word}".strip()
            node = _Node(path, table[path])
            options_ended = False
            continue
        node.positionals.append(word)
        if not node.spec["interspersed"]:
            options_ended = True

    where = {"config_path": root_values.get("config"), "ledger": root_values.get("ledger"),
             "given": tuple(node.positionals)}
    if "--" not in words and incomplete.startswith("-"):
        return _command_candidates(node, incomplete)
    if expecting is not None and words and words[-1] in expecting.names:
        return _values(expecting.choices, expecting.completer, incomplete, where)
    for index, (nargs, completer) in enumerate(node.spec["arguments"]):
        taken = sum(n for n, _ in node.spec["arguments"][:index] if n > 0)
        if nargs == -1 or len(node.positionals) < taken + nargs:
            return _values((), completer, incomplete, where)
    return _command_candidates(node, incomplete)


def _global(table: Mapping[str, Mapping[str, Any]], name: str, globals_: Mapping[str, bool]) -> _Option | None:
    """A global option met after the command (``netra-rm layer X --config F``)."""
    if name not in globals_:
        return None
    return _Node("", table[""]).option(name)


def _command_candidates(node: _Node, incomplete: str) -> list[Candidate]:
    found = [(name, short) for name, short in node.spec["commands"].items() if name.startswith(incomplete)]
    if incomplete and not incomplete[0].isalnum():
        for option in node.options:
            if option.hidden or (not option.multiple and option.dest in node.given):
                continue
            found += [(name, option.help) for name in option.names if name.startswith(incomplete)]
    return found


def _values(choices: Sequence[str], completer: str | None, incomplete: str,
            where: Mapping[str, Any]) -> list[Candidate]:
    if completer is not None:
        return [c for c in COMPLETERS[completer](incomplete, **where) if c[0].startswith(incomplete)]
    return [(c, "") for c in choices if c.startswith(incomplete)]


# -- answering a TAB ------------------------------------------------------------------------

def split_words(text: str) -> list[str]:
    """Split a command line as the shell would, tolerating an unclosed quote (the word
    being typed keeps what was typed of it)."""
    import shlex

    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    try:
        for token in lexer:
            words.append(token)
    except ValueError:
        words.append(lexer.token)
    return words


def _zsh_quote(text: str) -> str:
    """``text`` inside the double quotes of ``_arguments``' ``((value:description))``,
    which zsh evaluates: backslash, double quote, dollar and backtick are escaped."""
    for char in ("\\", '"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return text


def format_answer(shell: str, found: Sequence[Candidate]) -> str:
    """The text the shell's completion function reads back (Typer's protocol)."""
    if shell == "bash":
        return "\n".join(value for value, _ in found)
    if shell == "zsh":
        if not found:
            return "_files"
        items = []
        for value, help_ in found:
            item = '"' + _zsh_quote(value).replace(":", "\\:") + '"'
            items.append(f'{item}:"{_zsh_quote(help_)}"' if help_ else item)
        spec = "*: :((" + "\n".join(items) + "))"
        return "_arguments '" + spec.replace("'", "'\\''") + "'"
    return "\n".join(f"{value}\t{' '.join(help_.split())}" if help_ else value for value, help_ in found)


def respond(request: Mapping[str, str], out: Any = None) -> int | None:
    """Answer one completion call; its exit code, or None when this is not a TAB we answer
    (``source_*`` instructions go to Typer)."""
    instruction = request.get("instruction", "")
    shell = instruction.partition("_")[2]
    if not instruction.startswith("complete_") or shell not in SHELLS:
        return None
    if shell == "bash":
        words = split_words(request.get("comp_words", ""))
        try:
            cword = int(request.get("comp_cword", ""))
        except ValueError:
            cword = len(words)
        args, incomplete = words[1:cword], (words[cword] if cword < len(words) else "")
    else:
        line = request.get("args", "")
        words = split_words(line)[1:]
        if words and not line.endswith(" "):
            args, incomplete = words[:-1], words[-1]
        else:
            args, incomplete = words, ""
    found = candidates(args, incomplete)
    if shell == "fish" and request.get("fish_action") == "is-args":
        return 0 if found else 1
    text = format_answer(shell, found)
    stream = out if out is not None else sys.stdout
    stream.write(text + "\n" if text else "")
    stream.flush()
    return 0


# -- the generator --------------------------------------------------------------------------

class CompletionFile(NamedTuple):
    """One generated script: where it goes and what it says."""

    shell: str
    name: str
    text: str


FILE_NAMES: dict[str, str] = {"bash": f"{PROG_NAME}.bash", "zsh": f"_{PROG_NAME}", "fish": f"{PROG_NAME}.fish"}

_HEADER = f"# Generated by `{REGENERATE}` from the netra-rm command line; do not edit."

# Typer's zsh script only registers its function with compdef, so as an autoloaded file
# in $fpath the first TAB would complete nothing. As zsh's own completion files do, the
# file defines a function named like itself: autoloading runs the file once, which
# replaces the autoload stub by that function and calls it; every later TAB calls the
# function directly. Sourced (not autoloaded), the file registers it with compdef.
_ZSH_AUTOLOAD = """\
_{prog}() {{
  {func} "$@"
}}

if [[ "${{funcstack[1]}}" == _{prog} ]]; then
  _{prog} "$@"
else
  compdef _{prog} {prog}
fi"""


def _typer_script(shell: str) -> str:
    from typer.completion import get_completion_script

    return get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell)


def render(shell: str) -> CompletionFile:
    """The completion script for ``shell``, from Typer's template, with our header."""
    if shell not in FILE_NAMES:
        raise ValueError(f"no completion for shell {shell!r}; choose one of {', '.join(SHELLS)}")
    script = _typer_script(shell).strip()
    if shell == "zsh":
        first, _, body = script.partition("\n")  # "#compdef netra-rm" must stay the first line
        func = "_" + PROG_NAME.replace("-", "_") + "_completion"
        registration = f"compdef {func} {PROG_NAME}"
        if body.rstrip().endswith(registration):
            body = body.rstrip()[: -len(registration)] + _ZSH_AUTOLOAD.format(func=func, prog=PROG_NAME)
        text = f"{first}\n{_HEADER}\n{body.strip()}\n"
    else:
        text = f"{_HEADER}\n{script}\n"
    return CompletionFile(shell=shell, name=FILE_NAMES[shell], text=text)


def describe_command_line() -> dict[str, Any]:
    """The Typer application as plain data: per command path, its subcommands (with the
    short help Click shows), options and arguments."""
    import inspect

    import typer.main

    from netra_rm.cli.app import app
    from netra_rm.cli.completers import COMPLETER_NAMES

    root = typer.main.get_command(app)
    commands: dict[str, Any] = {}

    def completer_of(param: Any) -> str | None:
        hook = getattr(param, "_custom_shell_complete", None)
        if hook is None:
            return None
        function = inspect.getclosurevars(hook).nonlocals.get("autocompletion")
        name = COMPLETER_NAMES.get(getattr(function, "__name__", ""))
        if name is None:
            raise ValueError(f"{param.name}: completer {function!r} has no name in netra_rm.cli.completers")
        return name

    def visit(command: Any, path: str, parent: Any) -> None:
        ctx = command.context_class(command, info_name=path.rpartition(" ")[2] or PROG_NAME, parent=parent,
                                    **command.context_settings)
        subs = getattr(command, "commands", {})
        options, arguments = [], []
        for param in command.get_params(ctx):
            if param.param_type_name == "option":
                takes_value = not (param.is_flag or param.count)
                choices = tuple(str(c) for c in getattr(param.type, "choices", ()) or ())
                options.append((tuple(sorted([*param.opts, *param.secondary_opts])), param.name, takes_value,
                                bool(param.multiple), bool(param.hidden), param.help or "", choices,
                                completer_of(param)))
            else:
                arguments.append((param.nargs, completer_of(param)))
        commands[path] = {
            "commands": {name: sub.get_short_help_str() for name, sub in subs.items() if not sub.hidden},
            "options": options, "arguments": arguments,
            "interspersed": bool(getattr(command, "allow_interspersed_args", True)) and not subs,
        }
        for name, sub in subs.items():
            visit(sub, f"{path} {name}".strip(), ctx)

    visit(root, "", None)
    globals_ = {name: o[2] for o in commands[""]["options"] if o[1] in ("config", "ledger", "json_", "quiet",
                                                                      "no_color") for name in o[0]}
    return {"commands": commands, "globals": globals_}


def table_text() -> str:
    """The source of :mod:`netra_rm.completion_table`."""
    import pprint

    data = describe_command_line()
    body = pprint.pformat(data["commands"], width=110, compact=True, sort_dicts=False)
    return (f'"""The command line as plain data, for answering a TAB without loading Typer.\n\n'
            f'Generated by `{REGENERATE}` from the Typer application; do not edit.\n"""\n\n'
            "from __future__ import annotations\n\nfrom typing import Any\n\n"
            "#: Options that work before or after the command: name -> takes a value.\n"
            f"GLOBAL_OPTIONS: dict[str, bool] = {pprint.pformat(data['globals'], width=80)}\n\n"
            "#: Per command path ('' for the top level): subcommands with their short help; options as\n"
            "#: (names, dest, takes a value, repeatable, hidden, help, choices, completer); arguments as\n"
            "#: (nargs, completer); whether options may follow its arguments.\n"
            f"COMMANDS: dict[str, dict[str, Any]] = {body}\n")


def stale_files(directory: Path) -> list[str]:
    """The scripts in ``directory`` (and the table) that are missing or differ from a fresh
    generation."""
    stale = []
    for shell in SHELLS:
        wanted = render(shell)
        path = directory / wanted.name
        if not path.is_file() or path.read_text("utf-8") != wanted.text:
            stale.append(wanted.name)
    if not TABLE_PATH.is_file() or TABLE_PATH.read_text("utf-8") != table_text():
        stale.append(f"netra_rm/{TABLE_PATH.name}")
    return stale


def write_all(directory: Path) -> list[Path]:
    """Write every script into ``directory``, and the table when it changed; return the
    paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell in SHELLS:
        generated = render(shell)
        path = directory / generated.name
        path.write_text(generated.text, "utf-8")
        written.append(path)
    table = table_text()
    if not TABLE_PATH.is_file() or TABLE_PATH.read_text("utf-8") != table:
        TABLE_PATH.write_text(table, "utf-8")
        written.append(TABLE_PATH)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or check, or print) the completion scripts; the exit code says whether all is well."""
    import argparse

    parser = argparse.ArgumentParser(prog=REGENERATE, description="Generate netra-rm's shell completion "
                                     "scripts from its command line.")
    parser.add_argument("--dir", default=DEFAULT_DIR, type=Path,
                        help=f"where the scripts go (default: ./{DEFAULT_DIR})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming the scripts that are missing or stale")
    parser.add_argument("--print", dest="shell", choices=SHELLS, help="print one shell's script and exit")
    options: Any = parser.parse_args(argv)
    if options.shell:
        sys.stdout.write(render(options.shell).text)
        return 0
    if options.check:
        stale = stale_files(options.dir)
        if stale:
            sys.stderr.write(f"{REGENERATE}: stale completion scripts in {options.dir}: {', '.join(stale)}; "
                             f"run `{REGENERATE}` and commit the result.\n")
            return 1
        return 0
    for path in write_all(options.dir):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
