"""A fitted scorer as tensors and JSON, and back: what a bundle stores instead of a pickle.

A scorer's fitted state is its instance attributes after `setup` (KNN's bank, MDS's means and
precision, ReAct's threshold, the copied head, AdaSCALE's reference pairs). Each attribute must be
a tensor, a `HeadCopy`, a tuple of tensors or of scalars, a scalar or None; anything else is
refused by name, so a bundle never needs code execution to load.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import Tensor

from ascood.scorers import SCORERS, Scorer
from ascood.scorers.feature import HeadCopy

SCALARS = (bool, int, float, str, type(None))


class StateError(ValueError):
    """A scorer whose fitted state is not tensors + JSON, or a stored state that does not fit; one line."""


def _tensor(t: Tensor) -> Tensor:
    return t.detach().to("cpu").contiguous().clone()  # safetensors refuses views that share storage


def dump_state(scorer: Scorer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors by dotted name, JSON description of every attribute) of a fitted scorer."""
    tensors: dict[str, Tensor] = {}
    layout: dict[str, Any] = {}
    for attr, value in vars(scorer).items():
        if attr == "p":
            continue
        if isinstance(value, Tensor):
            tensors[attr] = _tensor(value)
            layout[attr] = {"kind": "tensor"}
        elif isinstance(value, HeadCopy):
            scalars = {}
            for f in fields(HeadCopy):
                v = getattr(value, f.name)
                if isinstance(v, Tensor):
                    tensors[f"{attr}.{f.name}"] = _tensor(v)
                else:
                    scalars[f.name] = v
            layout[attr] = {"kind": "head_copy", "scalars": scalars}
        elif isinstance(value, tuple) and value and all(isinstance(v, Tensor) for v in value):
            for i, v in enumerate(value):
                tensors[f"{attr}.{i}"] = _tensor(v)
            layout[attr] = {"kind": "tensor_tuple", "n": len(value)}
        elif isinstance(value, tuple) and all(isinstance(v, SCALARS) for v in value):
            layout[attr] = {"kind": "tuple", "value": list(value)}
        elif isinstance(value, SCALARS):
            layout[attr] = {"kind": "scalar", "value": value}
        else:
            raise StateError(f"scorer {scorer.name}: its fitted {attr!r} is a {type(value).__name__}, "
                             "not tensors or JSON values; it cannot go into a bundle")
    return tensors, layout


def load_state(name: str, params: dict[str, Any], tensors: dict[str, Tensor], layout: dict[str, Any]) -> Scorer:
    """The scorer `name` with `params`, its fitted attributes restored (on the CPU, the scorers' device)."""
    if name not in SCORERS:
        raise StateError(f"scorer {name!r}: not a scorer of this version (expected one of {', '.join(SCORERS)})")
    try:
        scorer = SCORERS[name](**params)
        for attr, spec in layout.items():
            kind = spec["kind"]
            if kind == "tensor":
                value: Any = tensors[attr]
            elif kind == "head_copy":
                parts = {f.name: tensors.get(f"{attr}.{f.name}") for f in fields(HeadCopy)}
                value = HeadCopy(**{**parts, **spec["scalars"]})
            elif kind == "tensor_tuple":
                value = tuple(tensors[f"{attr}.{i}"] for i in range(int(spec["n"])))
            elif kind == "tuple":
                value = tuple(spec["value"])
            elif kind == "scalar":
                value = spec["value"]
            else:
                raise StateError(f"scorer {name}: unknown state kind {kind!r} for {attr!r}")
            setattr(scorer, attr, value)
    except StateError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"scorer {name}: stored state does not fit ({type(exc).__name__}: {exc})") from None
    return scorer

