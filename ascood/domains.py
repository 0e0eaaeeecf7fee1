"""The domain of every numeric hyperparameter, declared once.

A run's config (`ascood.config.TrainConfig`) and a sweep's search space (`ascood.sweep.spec.Space`)
are both checked against these, so a range that leaves a parameter's domain is refused before
anything starts, with the same words as a bad value. Imports nothing of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field


@dataclass(frozen=True)
class Interval:
    """A set of reals [low, high] whose ends may be open; `high` may be +inf. Always finite values."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def describe(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_open=True)
FRACTION = Interval(0.0, 1.0, low_open=True)  # (0, 1]

# TrainConfig field → its domain. The search space's dimensions map onto these (see SPACE_DOMAINS).
DOMAINS: dict[str, Interval] = {
    "alpha_max": NON_NEGATIVE,
    "alpha_min": NON_NEGATIVE,
    "p_inv": FRACTION,
    "lam": NON_NEGATIVE,
    "sigma": POSITIVE,
    "lr": POSITIVE,
    "momentum": Interval(0.0, 1.0, high_open=True),
    "weight_decay": NON_NEGATIVE,
    "fc_lr_factor": POSITIVE,
    "odin_temperature": POSITIVE,
    "odin_epsilon": NON_NEGATIVE,
}

# Searched dimension → domain of its values: α sets α_max (and α_min), α_min = α · ratio ≤ α.
SPACE_DOMAINS: dict[str, Interval] = {
    "alpha": DOMAINS["alpha_max"],
    "alpha_min_ratio": Interval(0.0, 1.0),
    "p_inv": DOMAINS["p_inv"],
    "lam": DOMAINS["lam"],
    "sigma": DOMAINS["sigma"],
    "lr": DOMAINS["lr"],
}


def check_value(name: str, value: float, domains: dict[str, Interval] = DOMAINS) -> float:
    """`value` when it is a finite number in `name`'s domain; else a ValueError saying the domain."""
    domain = domains.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if not _is_finite(value):
        raise ValueError(f"expected a finite number, got {value}")
    if domain is not None and value not in domain:
        raise ValueError(f"expected a value {domain.describe()}, got {value}")
    return value


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float (10**400)
        return False


def _not_bool(kind: str):
    def check(value: object) -> object:
        if isinstance(value, bool):  # YAML's `true` is not 1
            raise ValueError(f"expected {kind}, got {value!r}")
        return value

    return check


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


# Field types for typed configs: integers that refuse booleans, floats that refuse booleans and ±inf/NaN.
Int = Annotated[int, BeforeValidator(_not_bool("an integer"))]
Float = Annotated[float, BeforeValidator(_not_bool("a number")), AfterValidator(_finite)]
# A random seed: accelerate's set_seed seeds NumPy, which (like Optuna's samplers) takes 0 … 2**32 - 1.
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]
