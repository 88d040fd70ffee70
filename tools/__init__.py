"""Generators of committed files (family table, result tables, embedded data sets).

Run as ``python tools/NAME.py`` or ``python -m tools.NAME`` from the repository root."""
