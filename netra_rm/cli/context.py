"""What every command shares: global options, the output, and error-to-exit-code mapping."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from netra_rm.config import env as envmod
from netra_rm.errors import ExitCode, NetraRMError
from netra_rm.render import Output

if TYPE_CHECKING:
    from netra_rm.config.model import Config
    from netra_rm.core.engine import Engine


@dataclass
class AppState:
    """Global options, resolved once per invocation; config and engine load on first use."""

    config_path: str | None = None
    ledger: str | None = None
    json: bool = False
    quiet: bool = False
    color: bool = True
    _config: Config | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    def output(self, json_flag: bool = False) -> Output:
        return Output(json=self.json or json_flag, quiet=self.quiet, color=self.color,
                      stdout=sys.stdout, stderr=sys.stderr)

    def config(self) -> Config:
        if self._config is None:
            from netra_rm.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def engine(self) -> Engine:
        if self._engine is None:
            from netra_rm.core.engine import Engine

            self._engine = Engine.from_options(config=self.config(), ledger=self.ledger)
        return self._engine


def state(ctx: typer.Context) -> AppState:
    """The invocation's :class:`AppState` (commands may be called before the callback ran)."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState(color=not envmod.no_color())
    return root.obj


@contextmanager
def guard(out: Output) -> Iterator[None]:
    """Turn our errors into one clear message and the contract's exit code; no traceback
    unless NETRA_RM_DEBUG=1."""
    try:
        yield
    except typer.Exit:
        raise
    except NetraRMError as exc:
        out.error(exc)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM in the commands that run until stopped
        from netra_rm.cli.streams import interrupted_exit_code

        out.info("interrupted" if not str(exc) else f"interrupted ({exc})")
        raise typer.Exit(interrupted_exit_code(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if envmod.debug():
            raise
        out.error(f"unexpected {exc.__class__.__name__}: {exc}",
                  ["This is a bug in netra-rm; rerun with NETRA_RM_DEBUG=1 for a traceback and report it."])
        raise typer.Exit(int(ExitCode.UNAVAILABLE)) from None


def stop_on_signals() -> None:
    """For commands that run until stopped or wait: SIGINT and SIGTERM end them cleanly,
    even when SIGINT was inherited ignored (see :mod:`netra_rm.cli.streams`)."""
    from netra_rm.cli.streams import stop_on_signals as install

    install()


def first_run_hint(st: AppState) -> str | None:
    """One line for someone who has configured nothing yet: no configuration file, none of
    the service variables set, no discovery. None otherwise."""
    if st.config_path or envmod.config_path():
        return None
    config = st.config()
    variables = [spec.url_env for spec in config.services.values() if spec.url_env]
    if envmod.variables_set(variables) or config.raw.get("discovery"):
        return None
    return (f"hint: nothing is configured (no --config or NETRA_RM_CONFIG, none of "
            f"{', '.join(variables)} set), so the built-in local addresses were checked; "
            "set those variables, or point --config at a file (`netra-rm config show > netra-rm.yaml` to start one).")


def finish(code: int | ExitCode) -> Any:
    """End the command with ``code``."""
    raise typer.Exit(int(code))
