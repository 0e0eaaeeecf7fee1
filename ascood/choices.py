"""How user-facing error text is made: the one "expected one of …" and user words kept on one line.
Imports nothing of the project."""

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


def printable(text: str) -> str:
    """A user's text inside a one-line message: unprintable characters (line breaks, NUL) escaped as repr does."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
