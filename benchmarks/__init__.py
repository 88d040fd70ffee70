"""Benchmark scripts by area, run as modules from the repository root.

For example ``python -m benchmarks.core.heal_minilm --data-dir DIR``."""
