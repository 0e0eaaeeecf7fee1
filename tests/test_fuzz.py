"""Property-based fuzz of the front door: generated bad sweep files, `ascood-train` flags and
config files, and malformed run directories for `ascood-eval`, run in-process through each
command's `main`. Every bad input is refused with exit code 2 and one line on stderr that names
the file, field or option at fault: no traceback, and nothing created. A few fixed cases then run
the console scripts in subprocesses, to show they behave the same."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st

from ascood.cli.common import UsageError
from ascood.cli.eval import main as eval_main
from ascood.cli.sweep import main as sweep_main
from ascood.cli.train import build_parser, load_config
from ascood.cli.train import main as train_main
from ascood.config import TrainConfig, config_json, flag_name, validate_config
from ascood.data import UnknownBenchmarkError
from ascood.domains import DOMAINS
from ascood.models import create_model
from ascood.scorers import SCORERS
from ascood.sweep.spec import SweepFileError, load_sweep

# Reproducible in CI (derandomize), nothing written to .hypothesis/ (database=None).
FUZZ = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

# A valid sweep file using every section, so that every field can be mutated.
SWEEP = {
    "name": "fuzz",
    "output": "OUT",
    "datasets": [{"benchmark": "cmnist", "num_samples": 2, "trial": {"epochs": 1},
                  "space": {"sigma": {"low": 0.1, "high": 1.0}}}],
    "trial": {"epochs": 1, "batch_size": 32, "lr": 0.05, "lambda": 1.0, "scorers": ["msp", "energy"]},
    "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}, "p_inv": {"low": 0.05, "high": 0.5},
              "ood_type": {"choices": ["gradient"]}},
    "algorithm": {"name": "tpe", "seed": 0, "multi_objective": False},
    "num_samples": 2,
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2.0},
    "objective": {"metric": "val/auroc", "scorer": "energy", "ood": "all"},
    "resources": {"processes_per_trial": 1, "cpus_per_process": 1.0, "gpus_per_process": 0.0,
                  "max_concurrent_trials": 1, "max_failures": 0},
    "final": {"seeds": [0, 1]},
    "transfer": {"top_k": 1, "seeds": [0], "defaults": True, "baseline": True},
}
REQUIRED = [("name",), ("output",), ("datasets",), ("space",), ("datasets", 0, "benchmark")]
TRAIN_CONFIG = {"benchmark": "cmnist", "epochs": 1, "scorers": ["msp", "energy"]}


def _nodes(value, path=()):
    """Every (path, value) below the root of a YAML tree."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield (*path, k), v
        yield from _nodes(v, (*path, k))


NODES = list(_nodes(SWEEP))
MAPPINGS = [(), *(p for p, v in NODES if isinstance(v, dict))]


def _get(data, path):
    for part in path:
        data = data[part]
    return data


def _set(data, path, value):
    _get(data, path[:-1])[path[-1]] = value


def _delete(data, path):
    parent = _get(data, path[:-1])
    if isinstance(parent, list):
        parent.pop(path[-1])
    else:
        del parent[path[-1]]


# --- values -------------------------------------------------------------------------------------

SCALARS = st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.booleans(), st.none())
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                   max_leaves=6)
OUT_OF_DOMAIN = [-1, 0, -0.5, 1.5, 2.0, 1e308, -1e308, 10**30, 10**400, math.nan, math.inf, -math.inf]
KEYS = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "a\nb", "tab\there", "nul\x00", "é", "0", "__init__"]),
                 st.integers(-3, 3), st.none(), st.booleans())


def bad_values(original):
    """Values of another type than `original`, or out of any domain it may have."""
    wrong_type = ANY.filter(lambda v: type(v) is not type(original))
    if isinstance(original, bool):
        return st.one_of(st.sampled_from([2, -1, 0.5, "maybe", "", [], {}]), wrong_type)
    if isinstance(original, int | float):
        return st.one_of(st.sampled_from(OUT_OF_DOMAIN), wrong_type)
    if isinstance(original, str):
        return st.one_of(st.text(max_size=16), wrong_type)
    if isinstance(original, list):
        return st.one_of(st.just([]), st.lists(ANY, min_size=1, max_size=3), wrong_type)
    return wrong_type


def printable(text: str) -> str:
    """Text as a one-line message must show it: each unprintable character (a line break) escaped as repr does."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def forms(key) -> set[str]:
    """How a key or field may be named in an error: as written, as a flag, unprintables escaped."""
    if not isinstance(key, str):
        return {str(key)}
    names = {key, key.replace("_", "-"), key.replace("-", "_"), flag_name(key).lstrip("-")}
    if key in ("lam", "lambda"):
        names |= {"lam", "lambda"}
    return {printable(n) for n in names}


def names_one_of(line: str, keys) -> bool:
    return any(f in line for k in keys for f in forms(k))


def _dump(data) -> bytes:
    return yaml.safe_dump(data, sort_keys=False).encode()


# --- running a command --------------------------------------------------------------------------


def refused(main, argv) -> str:
    """Run `main(argv)` in-process; assert exit 2, no traceback, one line on stderr; return the line."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
    # A warning a console script would print (the default filters hide these kinds) is a second line.
    shown = [w for w in caught if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning | ImportWarning
                                                   | ResourceWarning)]
    assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]
    text = err.getvalue()
    assert exc.value.code == 2, text
    assert "Traceback" not in text + out.getvalue(), text
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def sweep_refuses(path: Path) -> bool:
    """Whether the sweep file is invalid (so that running it cannot start a sweep). Any other
    exception escapes: the fuzz found a defect."""
    try:
        load_sweep(path)
    except (SweepFileError, UnknownBenchmarkError):
        return True
    return False


def train_refuses(argv) -> bool:
    """Whether ascood-train refuses these arguments before it would train."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            load_config(build_parser().parse_args([str(a) for a in argv]))
        except SystemExit as exc:
            return exc.code != 0  # --help exits 0: not a refusal
        except UsageError:
            return True
    return False


def check_sweep_refused(tmp: Path, content: bytes, fields=()) -> str:
    """Write the sweep file, skip it when valid, else run ascood-sweep on it and check the line."""
    path = tmp / "sweep.yaml"
    path.write_bytes(content)
    if not sweep_refuses(path):
        reject()
    line = refused(sweep_main, [path])
    assert str(path) in line, line
    if fields:
        assert names_one_of(line, fields), (fields, line)
    assert sorted(p.name for p in tmp.iterdir()) == ["sweep.yaml"], "nothing is created for a bad sweep file"
    return line


# --- 1. sweep files -----------------------------------------------------------------------------


def test_the_base_sweep_file_is_valid(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_bytes(_dump({**SWEEP, "output": str(tmp_path / "out")}))
    load_sweep(path)
    config = tmp_path / "run.yaml"
    config.write_bytes(_dump(TRAIN_CONFIG))
    assert not train_refuses(["--config", config, "--out", tmp_path / "r"])


@st.composite
def sweep_mutations(draw):
    """(kind, the fields at fault, data): one field of the valid sweep made wrong."""
    data = copy.deepcopy(SWEEP)
    kind = draw(st.sampled_from(["wrong value", "wrong value", "unknown key", "missing key", "alias"]))
    if kind == "wrong value":
        path, original = draw(st.sampled_from(NODES))
        _set(data, path, draw(bad_values(original)))
    elif kind == "unknown key":
        parent = draw(st.sampled_from(MAPPINGS))
        key = draw(KEYS)
        assume(key not in _get(data, parent))
        path = (*parent, key)
        _set(data, path, draw(ANY))
    elif kind == "missing key":
        path = draw(st.sampled_from(REQUIRED + [p for p, _ in NODES]))
        _delete(data, path)
    else:  # a YAML alias (safe_dump writes &id001 … *id001 for a shared node) where that node is wrong
        source = draw(st.sampled_from([p for p, v in NODES if isinstance(v, dict | list)]))
        path, _ = draw(st.sampled_from([(p, v) for p, v in NODES if p[:len(source)] != source]))
        _set(data, path, _get(data, source))
    # An error may name the mutated field, or a key inside its new value (a trial option, say).
    fields = [p for p in path if isinstance(p, str)] or [path[-1]]
    if kind != "missing key":
        fields += [p[-1] for p, _ in _nodes(_get(data, path)) if isinstance(p[-1], str)]
    return kind, fields, data


@settings(max_examples=200, **FUZZ)
@given(sweep_mutations())
def test_a_mutated_sweep_file_is_one_line_naming_file_and_field(mutation):
    _, fields, data = mutation
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if data.get("output") == "OUT":
            data["output"] = str(tmp / "out")
        check_sweep_refused(tmp, _dump(data), fields)


TAGS = [
    "!!python/object/apply:os.system ['touch MARKER']", "!!python/object:os.system {}", "!!python/name:os.system ''",
    "!!python/module:os ''", "!!python/tuple [1, 2]", "!custom x", "!<tag:example.com,2000:x> 1",
    "!!set {a}", "!!binary '@@@'", "!!omap 5",
]
BAD_SCALARS = ["2001-13-45", "!!int abc", "!!timestamp x", "!!float x", "!!bool maybe", "!!int ''", "0x_", "1" * 5000,
               "2001-01-01T99:00:00", "*undefined"]
UNPRINTABLE = ["\x00", "\x07", "\x1b", "\x7f", "\ufffe", "\x0b"]
INVALID_UTF8 = [*range(0x80, 0xC2), *range(0xF5, 0x100)]  # never valid after an ASCII character


@st.composite
def sweep_texts(draw, base: dict):
    """(kind, needle, bytes): YAML text a mutated data structure cannot express."""
    kind = draw(st.sampled_from(["tag", "bad scalar", "control character", "not UTF-8", "deep nesting", "not a mapping",
                                 "empty"]))
    text = _dump(base)
    if kind in ("tag", "bad scalar", "deep nesting"):
        path, _ = draw(st.sampled_from(list(_nodes(base))))
        data = copy.deepcopy(base)
        _set(data, path, "SENTINEL")
        if kind == "deep nesting":
            depth = draw(st.integers(1, 1000))
            snippet = draw(st.sampled_from(["[" * depth + "]" * depth, "{a: " * depth + "1" + "}" * depth]))
        else:
            snippet = draw(st.sampled_from(TAGS if kind == "tag" else BAD_SCALARS))
        text = _dump(data).replace(b"SENTINEL", snippet.encode())
    elif kind == "control character":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(UNPRINTABLE)).encode() + text[at:]
    elif kind == "not UTF-8":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + bytes([draw(st.sampled_from(INVALID_UTF8))]) + text[at:]
    elif kind == "not a mapping":
        text = _dump(draw(st.one_of(st.lists(ANY, max_size=3), st.text(max_size=10), st.integers(), st.floats(),
                                    st.booleans())))
    else:
        text = draw(st.sampled_from([b"", b"\n", b"   \n\n", b"# only a comment\n", b"---\n", b"null\n", b"~\n"]))
    return kind, text


@settings(max_examples=100, **FUZZ)
@given(sweep_texts({**SWEEP, "output": "OUT"}))
def test_bad_yaml_text_in_a_sweep_file_is_one_line_naming_the_file(case):
    kind, text = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        line = check_sweep_refused(tmp, text.replace(b"OUT", str(tmp / "out").encode()))
        if kind == "not UTF-8":
            assert "not UTF-8" in line, line
        if kind == "empty":
            assert "required field is missing" in line, line
        assert not (Path.cwd() / "MARKER").exists()


def test_yaml_anchors_aliases_and_merge_keys_are_accepted_when_valid_and_refused_when_not(tmp_path):
    data = copy.deepcopy(SWEEP)
    data["output"] = str(tmp_path / "out")
    data["datasets"][0]["space"] = data["space"]  # one node, written once with an anchor, then an alias
    data["transfer"]["seeds"] = data["final"]["seeds"]
    text = _dump(data)
    assert b"&id001" in text and b"*id001" in text
    text = text.replace(b"trial:\n  epochs: 1\n  batch_size: 32\n", b"trial:\n  <<: {epochs: 1, batch_size: 32}\n")
    assert b"<<:" in text
    path = tmp_path / "sweep.yaml"
    path.write_bytes(text)
    spec, _ = load_sweep(path)
    assert spec.trial["batch_size"] == 32 and spec.datasets[0].space == spec.space

    data["final"] = data["trial"]  # the alias carries the trial's keys where they are unknown
    line = check_sweep_refused(tmp_path, _dump(data), ["final"])
    assert "final.epochs: unknown key" in line


# --- 2. ascood-train flags and config files ------------------------------------------------------

FIELDS = TrainConfig.model_fields
SCORER_NAMES = st.sampled_from(sorted(SCORERS))
NOT_A_NUMBER = st.sampled_from(["", "abc", "1,5", "0x10", "one", "--", "1e", "[1]"])


def _bound(field, name):
    return next((getattr(m, name) for m in field.metadata if hasattr(m, name)), None)


def bad_flag_values(name: str) -> st.SearchStrategy[str]:
    """Text that `--flag=TEXT` must refuse, for the field `name`."""
    field = FIELDS[name]
    if field.annotation is int:
        ge, le = _bound(field, "ge"), _bound(field, "le")
        out = [st.sampled_from(["1.5", "nan", "inf", "1e3", "true"]), NOT_A_NUMBER]
        if ge is not None:
            out.append(st.integers(max_value=ge - 1).map(str))
        if le is not None:
            out.append(st.integers(min_value=le + 1).map(str))
        return st.one_of(out)
    if field.annotation is float:
        domain = DOMAINS.get(name)
        outside = st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: domain is None or x not in domain)
        if domain is None:
            outside = st.sampled_from([math.nan, math.inf, -math.inf])
        return st.one_of(outside.map(repr), st.sampled_from(["nan", "inf", "-inf", "1e999"]), NOT_A_NUMBER)
    if name == "scorers":
        unknown = st.text(max_size=8).filter(lambda s: s.strip() not in SCORERS)
        return st.tuples(st.lists(SCORER_NAMES, max_size=2), unknown).map(lambda t: ",".join([*t[0], t[1]])).filter(
            lambda s: s != "all")
    return st.text(max_size=12)  # choices and names: assume() keeps only the refused ones


@st.composite
def train_argvs(draw):
    """(flag at fault, argv)."""
    kind = draw(st.sampled_from(["value", "value", "value", "bool", "unknown flag", "alpha order", "config file"]))
    names = [n for n, f in FIELDS.items() if f.annotation is not bool and n != "weights"]
    if kind == "value":
        name = draw(st.sampled_from(names))
        flag = flag_name(name)
        return flag, [f"{flag}={draw(bad_flag_values(name))}"]
    if kind == "bool":
        flag = flag_name(draw(st.sampled_from([n for n, f in FIELDS.items() if f.annotation is bool])))
        return flag, [f"{flag}={draw(st.text(max_size=6))}"]
    if kind == "unknown flag":
        flag = "--" + draw(st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="-_"), min_size=1,
                                   max_size=10))
        return flag, [f"{flag}={draw(st.text(max_size=6))}"]
    if kind == "config file":
        return "--config", ["--config", draw(st.sampled_from(["{tmp}/missing.yaml", "{tmp}", "{tmp}/missing/run.yaml"]))]
    low = draw(st.floats(1e-3, 100.0))
    high = draw(st.floats(0.0, low, exclude_max=True))
    return "--alpha-min", [f"--alpha-min={low!r}", f"--alpha-max={high!r}"]


@settings(max_examples=120, **FUZZ)
@given(train_argvs())
def test_bad_train_flags_are_one_line_naming_the_flag(case):
    flag, argv = case
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        base = [] if any(a.startswith(("--benchmark", "--epochs")) for a in argv) else ["--benchmark", "cmnist", "--epochs", "1"]
        argv = [*base, *(a.replace("{tmp}", tmp) for a in argv), "--out", out]
        assume(train_refuses(argv))
        line = refused(train_main, argv)
        assert printable(flag) in line, (argv, line)
        assert not out.exists() and not any(Path(tmp).iterdir())


@st.composite
def train_config_mutations(draw):
    """(key at fault, config data)."""
    data = dict(TRAIN_CONFIG)
    kind = draw(st.sampled_from(["wrong value", "wrong value", "unknown key"]))
    if kind == "wrong value":
        key = draw(st.sampled_from([*FIELDS, "lambda", "p-inv", "batch-size", "alpha-max"]))
        name = {"lambda": "lam"}.get(key, key.replace("-", "_"))
        original = TRAIN_CONFIG.get(name, FIELDS[name].default)
        data[key] = draw(st.one_of(bad_values(original) if original is not None else ANY, ANY))
    else:
        key = draw(KEYS)
        assume(key not in data)
        data[key] = draw(ANY)
    return key, data


@settings(max_examples=80, **FUZZ)
@given(train_config_mutations())
def test_a_bad_train_config_file_is_one_line_naming_file_or_field(case):
    key, data = case
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "run.yaml", Path(tmp) / "run"
        config.write_bytes(_dump(data))
        argv = ["--config", config, "--out", out]
        assume(train_refuses(argv))
        line = refused(train_main, argv)
        assert str(config) in line or names_one_of(line, [key]), (data, line)
        assert not out.exists() and sorted(p.name for p in Path(tmp).iterdir()) == ["run.yaml"]


@settings(max_examples=40, **FUZZ)
@given(sweep_texts(TRAIN_CONFIG))
def test_bad_yaml_text_in_a_train_config_is_one_line_naming_the_file(case):
    _, text = case
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "run.yaml", Path(tmp) / "run"
        config.write_bytes(text)
        argv = ["--config", config, "--out", out]
        assume(train_refuses(argv))
        line = refused(train_main, argv)
        assert str(config) in line, line
        assert not out.exists() and not (Path.cwd() / "MARKER").exists()


def _weights_file(path: Path, kind: str, blob: bytes) -> None:
    """A --weights file that cannot be loaded into the small_cnn backbone."""
    good = {k.removeprefix("backbone."): v for k, v in create_model("small_cnn", num_classes=2).state_dict().items()
            if k.startswith("backbone.")}
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(blob)
    elif kind != "missing":
        first = next(iter(good))
        torch.save({"list": [1, 2], "tensor": torch.zeros(3), "not tensors": {"a": 1}, "wrong keys": {"x": torch.zeros(1)},
                    "wrong shape": {**good, first: torch.zeros(1)}, "missing key": {k: v for k, v in good.items() if k != first},
                    }[kind], path)


@settings(max_examples=18, **FUZZ)
@given(st.sampled_from(["missing", "directory", "garbage", "list", "tensor", "not tensors", "wrong keys", "wrong shape",
                        "missing key"]), st.binary(max_size=64), st.booleans())
def test_a_weights_file_that_does_not_fit_is_refused_before_anything_is_created(kind, blob, in_config):
    with tempfile.TemporaryDirectory() as tmp:
        weights, out = Path(tmp) / "w.pt", Path(tmp) / "run"
        _weights_file(weights, kind, blob)
        argv = ["--benchmark", "cmnist", "--epochs", "1", "--out", out]
        if in_config:
            (Path(tmp) / "run.yaml").write_text(f"weights: {json.dumps(str(weights))}\n")
            argv += ["--config", Path(tmp) / "run.yaml"]
        else:
            argv.append(f"--weights={weights}")
        line = refused(train_main, argv)
        assert "--weights" in line and str(weights) in line, line
        assert not out.exists()


# --- 3. ascood-eval run directories and options ---------------------------------------------------

EVAL_CONFIG = validate_config({"benchmark": "cmnist", "epochs": 1})
GOOD_STATE = {
    "config": config_json(EVAL_CONFIG),
    "model": create_model("small_cnn", num_classes=2, feature_norm=EVAL_CONFIG.resolved_feature_norm).state_dict(),
    "epoch": 1,
}
BAD_ENTRIES = {
    "config": [5, None, [1], "", "not json", "[1]", json.dumps({"epochs": 0}), json.dumps({"nosuch": 1}),
               json.dumps({"benchmark": "nosuch"})],
    "model": ["x", None, [1], {}, {"head.fc.weight": torch.zeros(7, 4)}, {"head.fc.weight": 5},
              "extra key", "missing key", "wrong shape", "not a tensor"],
    "epoch": ["x", None, [1], {}, "1.5"],
}


def _model_entry(choice):
    """The named corruption of the good model state (or the value itself)."""
    if not isinstance(choice, str):
        return choice
    good = GOOD_STATE["model"]
    first = next(iter(good))
    corrupt = {"extra key": {**good, "extra": torch.zeros(1)}, "missing key": {k: v for k, v in good.items() if k != first},
               "wrong shape": {**good, first: torch.zeros(3)}, "not a tensor": {**good, first: 5}}
    return corrupt.get(choice, choice)


@st.composite
def run_dirs(draw):
    """(kind, a function making a malformed run directory at a path)."""
    kind = draw(st.sampled_from(["no directory", "a file", "empty", "checkpoint is a directory", "dangling link", "garbage",
                                 "empty file", "not a dict", "entries missing", "entry wrong", "entry wrong"]))
    blob = draw(st.binary(max_size=64))
    state = dict(GOOD_STATE)
    if kind == "not a dict":
        state = draw(st.sampled_from([[1, 2], torch.zeros(2), "config", 5]))
    elif kind == "entries missing":
        for key in draw(st.lists(st.sampled_from(sorted(GOOD_STATE)), min_size=1, unique=True)):
            del state[key]
    elif kind == "entry wrong":
        key = draw(st.sampled_from(sorted(BAD_ENTRIES)))
        choice = draw(st.sampled_from(BAD_ENTRIES[key]))
        state[key] = _model_entry(choice) if key == "model" else choice

    def make(run: Path) -> None:
        if kind == "no directory":
            return
        if kind == "a file":
            run.write_bytes(blob)
            return
        run.mkdir()
        ckpt = run / "checkpoint.pt"
        if kind == "checkpoint is a directory":
            ckpt.mkdir()
        elif kind == "dangling link":
            ckpt.symlink_to(run / "nowhere.pt")
        elif kind == "garbage":
            ckpt.write_bytes(blob)
        elif kind == "empty file":
            ckpt.write_bytes(b"")
        elif kind != "empty":
            torch.save(state, ckpt)

    return kind, make


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@settings(max_examples=50, **FUZZ)
@given(run_dirs())
def test_a_malformed_run_directory_is_one_line_naming_it(case):
    kind, make = case
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        make(run)
        before = _tree(Path(tmp))
        line = refused(eval_main, [run, "--scorers", "msp", "--no-search"])
        assert str(run) in line, (kind, line)
        assert _tree(Path(tmp)) == before, "nothing is created for a bad run directory"


@st.composite
def eval_options(draw):
    """(option at fault, its arguments)."""
    if draw(st.booleans()):
        names = draw(st.lists(st.one_of(SCORER_NAMES, st.just("all"), st.text(max_size=8)), min_size=1, max_size=3))
        value = ",".join(names)
        assume(value != "all" and any(s.strip() not in SCORERS for s in value.split(",")))
        return "--scorers", [f"--scorers={value}"]
    return "--out", draw(st.sampled_from([["--out", "{tmp}"], ["--out", "{tmp}/a-file/x.parquet"],
                                          ["--out", "{tmp}/a-file/deeper/x.parquet"]]))


@settings(max_examples=30, **FUZZ)
@given(eval_options())
def test_bad_eval_options_are_one_line_naming_the_option(case):
    option, args = case
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a-file").write_text("x")
        before = _tree(Path(tmp))
        line = refused(eval_main, [Path(tmp) / "run", *(a.format(tmp=tmp) for a in args)])
        assert option in line, line
        assert _tree(Path(tmp)) == before


# --- the console scripts behave the same (subprocesses) -------------------------------------------


def _subprocess_refuses(module: str, argv, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_the_console_scripts_refuse_bad_input_the_same_way(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: t\noutput: {tmp_path / 'out'}\nnum_samples: !!python/object/apply:os.system ['touch MARKER']\n")
    line = _subprocess_refuses("ascood.cli.sweep", [sweep], tmp_path)
    assert line.startswith("ascood-sweep: error: ") and f"{sweep}:3: not valid YAML" in line
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "out").exists()

    sweep.write_bytes(_dump({**SWEEP, "output": str(tmp_path / "out"), "final": {"seeds": [-1]}}))
    line = _subprocess_refuses("ascood.cli.sweep", [sweep], tmp_path)
    assert f"{sweep}: final.seeds[0]: Input should be greater than or equal to 0" in line
    assert not (tmp_path / "out").exists()

    line = _subprocess_refuses("ascood.cli.train", ["--benchmark", "cmnist", "--seed=-1", "--out", tmp_path / "r"], tmp_path)
    assert "ascood-train: error: --seed: Input should be greater than or equal to 0" in line
    assert not (tmp_path / "r").exists()

    config = tmp_path / "run.yaml"
    config.write_bytes(b"epochs: 1\n1: 2\nscorers: 5\n")
    line = _subprocess_refuses("ascood.cli.train", ["--config", config, "--out", tmp_path / "r"], tmp_path)
    assert f"{config}: 1: expected an option name" in line and not (tmp_path / "r").exists()

    run = tmp_path / "run"
    run.mkdir()
    torch.save({k: v for k, v in GOOD_STATE.items() if k != "model"}, run / "checkpoint.pt")
    line = _subprocess_refuses("ascood.cli.eval", [run, "--no-search"], tmp_path)
    assert f"ascood-eval: error: {run / 'checkpoint.pt'}: not a readable ascood checkpoint (no 'model' entry)" == line
    assert _tree(run) == ["checkpoint.pt"]
