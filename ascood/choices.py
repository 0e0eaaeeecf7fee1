"""The one way a value outside a fixed set of names is refused (imports nothing of the project)."""

from __future__ import annotations

from collections.abc import Iterable


def expected_one_of(choices: Iterable[object], got: object) -> str:
    """'expected one of a, b, c, got 'x'': the tail every such error message shares."""
    return f"expected one of {', '.join(map(str, choices))}, got {got!r}"


def one_of(value: str, choices: Iterable[str], what: str | None = None) -> str:
    """`value` when it is one of `choices`; else a ValueError naming `what` and every choice."""
    choices = tuple(choices)
    if value in choices:
        return value
    raise ValueError((f"{what}: " if what else "") + expected_one_of(choices, value))
