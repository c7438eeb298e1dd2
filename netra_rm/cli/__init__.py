"""The ``netra-rm`` command line: a thin layer over the library (see ``app.py``)."""

from __future__ import annotations


def main() -> None:
    """Console-script entry point."""
    import sys

    if "run" in sys.argv[1:6]:  # `run` wraps every test command: skip Typer when we can
        from netra_rm.cli.fast_run import main as fast_run

        code = fast_run(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    from netra_rm.cli.app import app

    app(prog_name="netra-rm")
