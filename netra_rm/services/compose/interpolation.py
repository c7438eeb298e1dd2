"""Compose's variable interpolation: ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}`` and
``${VAR+other}``, nested, with ``$$`` for a literal ``$``. Used by the reader for compose
files and for the values of a ``.env`` file."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .model import ComposeError

NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def interpolate(text: str, variables: Mapping[str, str], *, where: str = "", unset: list[str] | None = None) -> str:
    """``text`` with its variables filled from ``variables``; the names of unset variables
    used without a default go to ``unset``.

    Raises :class:`ComposeError` for a ``?`` form whose variable is missing, or bad syntax.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _closing_brace(text, i + 2)
            if end < 0:
                raise ComposeError(f"{where}unterminated ${{...}} in {text!r}.")
            out.append(_expand(text[i + 2:end], variables, where=where, unset=unset))
            i = end + 1
            continue
        match = re.match(NAME, text[i + 1:])
        if match:
            name = match.group(0)
            value = variables.get(name)
            if value is None and unset is not None:
                unset.append(name)
            out.append(value or "")
            i += 1 + len(name)
            continue
        out.append("$")
        i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _expand(body: str, variables: Mapping[str, str], *, where: str, unset: list[str] | None) -> str:
    match = re.match(rf"({NAME})(?:(:?[-?+])(.*))?\Z", body, re.DOTALL)
    if not match:
        raise ComposeError(f"{where}invalid interpolation ${{{body}}}.")
    name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
    value = variables.get(name)
    empty_counts = bool(operator) and operator.startswith(":")
    missing = value is None or (empty_counts and value == "")
    if not operator:
        if value is None and unset is not None:
            unset.append(name)
        return value or ""
    kind = operator[-1]
    if kind == "-":
        return interpolate(argument, variables, where=where, unset=unset) if missing else str(value)
    if kind == "+":
        return "" if missing else interpolate(argument, variables, where=where, unset=unset)
    if missing:  # "?"
        message = interpolate(argument, variables, where=where, unset=unset) or "is not set"
        raise ComposeError(f"{where}required variable {name} {message}.")
    return str(value)
