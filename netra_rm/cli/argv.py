"""Global options anywhere: ``netra-rm status -q`` is ``netra-rm -q status``.

Typer (Click) only knows the global options (``--config``, ``--ledger``, ``--json``,
``-q``/``--quiet``, ``--no-color``) before the command. :func:`hoist_global_options`
moves those found after it to the front, before Typer sees the line. It knows which of
each command's own options take a value (from :mod:`netra_rm.completion_table`, which
is generated from the application), so a value is never mistaken for an option, and it
stops where the words stop being netra-rm's: after ``--``, and in ``run`` at the first
word of CMD, so ``netra-rm run ... -- pytest -q`` keeps ``-q`` for pytest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandLine:
    """A command line with its global options in front, and which command it runs."""

    argv: list[str]
    command: tuple[str, ...]  # e.g. ("config", "show"); () when no command is given


def hoist_global_options(argv: Sequence[str]) -> CommandLine:
    """``argv`` (without the program name) with the global options that follow the
    command moved before it."""
    from netra_rm.completion import global_options, subcommands, value_options

    globals_ = global_options()
    front: list[str] = []
    moved: list[str] = []
    rest: list[str] = []
    command: list[str] = []
    takes_value = value_options("")
    words = list(argv)
    i = 0
    while i < len(words):  # the top level: its options, then the command's name
        word = words[i]
        if word == "--" or not word.startswith("-") or word == "-":
            break
        front.append(word)
        name, eq, _ = word.partition("=")
        if name in takes_value and not eq and i + 1 < len(words):
            i += 1
            front.append(words[i])
        i += 1
    path = ""
    while i < len(words) and words[i] in subcommands(path):
        command.append(words[i])
        rest.append(words[i])
        path = " ".join(command)
        i += 1
    if not command:
        return CommandLine([*front, *words[i:]], ())
    takes_value = value_options(path)
    stops_at_argument = command == ["run"]
    while i < len(words):
        word = words[i]
        if word == "--" or (stops_at_argument and (not word.startswith("-") or word == "-")):
            rest.extend(words[i:])
            break
        name, eq, _ = word.partition("=")
        if name in globals_ and name not in takes_value and word.startswith("-"):
            moved.append(word)
            if globals_[name] and not eq and i + 1 < len(words):
                i += 1
                moved.append(words[i])
        else:
            rest.append(word)
            if word.startswith("-") and name in takes_value and not eq and i + 1 < len(words):
                i += 1
                rest.append(words[i])
        i += 1
    return CommandLine([*front, *moved, *rest], tuple(command))
