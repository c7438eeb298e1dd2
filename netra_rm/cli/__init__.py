"""The ``netra-rm`` command line: a thin layer over the library (see ``app.py``)."""

from __future__ import annotations


def main() -> None:
    """Console-script entry point."""
    from netra_rm.cli.app import app

    app(prog_name="netra-rm")
