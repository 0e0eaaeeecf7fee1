"""Benchmarks by name (registry) and the embedded ones built from PyPI-shipped data."""

from ascood.data.registry import (
    BenchmarkData,
    OODSet,
    Split,
    UnknownBenchmarkError,
    get_spec,
    list_benchmarks,
    load_benchmark,
    register_benchmark,
)

__all__ = [
    "BenchmarkData",
    "OODSet",
    "Split",
    "UnknownBenchmarkError",
    "get_spec",
    "list_benchmarks",
    "load_benchmark",
    "register_benchmark",
]
