"""The ``netra-rm`` command line: a thin layer over the library (see ``app.py``)."""

from __future__ import annotations


def main() -> None:
    """Console-script entry point."""
    import sys

    from netra_rm.config import env as envmod

    request = envmod.completion_request()
    if request is not None:  # a TAB: answered without Typer or Rich
        from netra_rm.completion import respond

        code = respond(request)
        if code is not None:
            sys.exit(code)

    from netra_rm.cli.argv import hoist_global_options
    from netra_rm.cli.streams import quiet_closed_stdout, stop_on_signals

    line = hoist_global_options(sys.argv[1:])
    quiet_closed_stdout()
    if line.command == ("run",):
        # SIGINT inherited ignored would never reach CMD; `run` forwards SIGTERM itself.
        # (`monitor` and `layer` do this in their command, see cli.context.stop_on_signals.)
        stop_on_signals(sigterm=False)
        from netra_rm.cli.fast_run import main as fast_run  # skips Typer when it can

        code = fast_run(line.argv)
        if code is not None:
            sys.exit(code)
    from netra_rm.cli.app import app

    app(args=line.argv, prog_name="netra-rm")
