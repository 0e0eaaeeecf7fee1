"""Reading a user's text or YAML file, with one-line errors that name the file (and line or byte)."""

from __future__ import annotations

from pathlib import Path

import yaml


class YamlFileError(ValueError):
    """A missing file, a YAML syntax error (file:line) or a top level that is not a mapping."""


def read_text(path: str | Path, what: str = "file") -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is one line naming it (and the byte)."""
    path = Path(path)
    if not path.is_file():
        raise YamlFileError(f"{what} {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def read_mapping(path: str | Path, what: str = "file") -> dict:
    path = Path(path)
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:  # a control character (NUL, BEL, …) in the text
        line = text.count("\n", 0, exc.position) + 1
        raise YamlFileError(f"{path}:{line}: not valid YAML (unacceptable character #x{exc.character:04x})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise YamlFileError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise YamlFileError(f"{path}: not valid YAML (nested too deeply)") from None
    except Exception as exc:  # a scalar the safe constructors cannot build: 2001-13-45, !!int abc, a 5000-digit int
        raise YamlFileError(f"{path}: not valid YAML (a value cannot be read: {' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlFileError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
