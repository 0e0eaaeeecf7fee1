"""The paper's seven ID benchmarks, built from the user's data as `benchmarks.yaml` defines them.

Layers, each importing only those above it: `schema` (the definitions, parameters, geometry),
`native` (the datasets' own layouts), `parts` (`inventory`: every part found in a layout, or
what is missing, without decoding), `build` (the parts decoded into a `BenchmarkData`, each
definition registered). `ascood-data check` shows the inventory; a sweep builds every benchmark
before its first trial.
"""

from ascood.data.real.native import mixoe_classes
from ascood.data.real.parts import inventory
from ascood.data.real.schema import BenchmarkDef, definitions, geometry, resolve_params, specialize

__all__ = ["BenchmarkDef", "definitions", "geometry", "inventory", "mixoe_classes", "resolve_params", "specialize"]
