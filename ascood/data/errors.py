"""Why the user's data cannot make a benchmark; free of project imports so every layer can raise
them and every command can catch them."""

from __future__ import annotations


class UnknownBenchmarkError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class DatasetError(Exception):
    """The user's data cannot make the benchmark (missing, malformed, unreadable); the one-line
    message names the file, line or path at fault."""

    def __str__(self) -> str:
        return str(self.args[0])


class DatasetNotFound(DatasetError, FileNotFoundError):
    """A real benchmark whose data is not where it was looked for; the message names the path."""


class DataLayoutError(DatasetError, ValueError):
    """A dataset file that does not match its expected format; one line naming file (and line)."""


class CorruptImageError(DatasetError):
    """An image that cannot be decoded; the message names the file."""
