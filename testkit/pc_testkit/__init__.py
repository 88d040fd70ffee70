"""Helpers for tests, examples and benchmarks: tiny random-initialised models of every supported
family, saved with working offline processors (nothing is downloaded)."""

from .tiny_models import FAMILIES, Family

__all__ = ["FAMILIES", "Family"]
