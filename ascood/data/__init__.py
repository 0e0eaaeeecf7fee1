"""Benchmarks by name (registry), with every built-in builder registered on import.

The registry knows no builder; importing this package (which Python does before any of its
modules) imports the embedded and the real benchmarks, and each registers itself, once.
"""

from ascood.data import embedded as _embedded  # noqa: F401  registers cmnist, mnist6, mnist10
from ascood.data.real import build as _real  # noqa: F401  registers the paper's seven benchmarks
from ascood.data.registry import (
    BenchmarkData,
    DatasetError,
    DatasetNotFound,
    Geometry,
    OODSet,
    Split,
    UnknownBenchmarkError,
    cache_dir,
    data_root,
    get_spec,
    list_benchmarks,
    load_benchmark,
    parse_name,
    register_benchmark,
)

__all__ = [
    "BenchmarkData",
    "DatasetError",
    "DatasetNotFound",
    "Geometry",
    "OODSet",
    "Split",
    "UnknownBenchmarkError",
    "cache_dir",
    "data_root",
    "get_spec",
    "list_benchmarks",
    "load_benchmark",
    "parse_name",
    "register_benchmark",
]
