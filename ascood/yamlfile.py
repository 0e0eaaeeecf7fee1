"""Reading a YAML mapping from a file, with one-line errors that name the file (and line)."""

from __future__ import annotations

from pathlib import Path

import yaml


class YamlFileError(ValueError):
    """A missing file, a YAML syntax error (file:line) or a top level that is not a mapping."""


def read_mapping(path: str | Path, what: str = "file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise YamlFileError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise YamlFileError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlFileError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
