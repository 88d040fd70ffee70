"""The package version, in a module of its own so that any stage can record it without importing
the package facade (``prune_compensate/__init__.py`` imports every stage)."""

__version__ = "0.1.0"
