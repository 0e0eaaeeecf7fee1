"""What every ascood command shares: one-line errors with exit code 2, YAML config files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from ascood.choices import printable
from ascood.yamlfile import YamlFileError, read_mapping

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump, no traceback)."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, printable(message))  # argparse quotes the user's words raw


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def read_yaml_mapping(path: str | Path) -> dict:
    try:
        return read_mapping(path, what="--config: file")
    except YamlFileError as exc:
        raise UsageError(str(exc)) from None
