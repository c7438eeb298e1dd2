"""The completers as Typer calls them (``autocompletion=``): the line's ``--config`` and
``--ledger`` are read from the context, the candidates from :mod:`netra_rm.completion`.

A TAB is normally answered by :func:`netra_rm.completion.respond` without Typer; these
are what Typer would call, and what the generator of the completion table reads.
"""

from __future__ import annotations

import typer

from netra_rm.completion import (
    Candidate,
    allocation_id_candidates,
    layer_candidates,
    service_candidates,
    target_candidates,
)


def _root_option(ctx: typer.Context, name: str) -> str | None:
    """A global option given on the command line being completed (e.g. ``--config``)."""
    value = ctx.find_root().params.get(name)
    return value if isinstance(value, str) and value else None


def complete_layer(ctx: typer.Context, incomplete: str) -> list[Candidate]:
    return layer_candidates(incomplete, config_path=_root_option(ctx, "config"))


def complete_service(ctx: typer.Context, incomplete: str) -> list[Candidate]:
    return service_candidates(incomplete, config_path=_root_option(ctx, "config"))


def complete_target(ctx: typer.Context, incomplete: str) -> list[Candidate]:
    return target_candidates(incomplete, config_path=_root_option(ctx, "config"))


def complete_allocation_id(ctx: typer.Context, incomplete: str) -> list[Candidate]:
    given = [v for value in ctx.params.values() if isinstance(value, (list, tuple)) for v in value]
    return allocation_id_candidates(incomplete, ledger=_root_option(ctx, "ledger"), given=given)


#: The name each completer (by its function name: Typer wraps it) goes by in the completion table.
COMPLETER_NAMES: dict[str, str] = {
    function.__name__: name for function, name in (
        (complete_layer, "layer"), (complete_service, "service"), (complete_target, "target"),
        (complete_allocation_id, "allocation_id"))
}
