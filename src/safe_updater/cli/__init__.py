"""The ``safe-updater`` command line: Typer + Rich."""
