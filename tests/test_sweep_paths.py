"""The on-disk names a sweep derives from a dataset's name (`ascood.sweep.paths.safe_name`): plain
names kept as they are (earlier outputs still resume), parametrized ones (`cmnist[classes=2]`)
made into names that pandas' / pyarrow's hive partitioning take literally."""

import os
import re

import pandas as pd
import pyarrow.dataset as ds
import pytest

from ascood.config import validate_config
from ascood.results import SCHEMA, RunLabels, read_results, run_id_for, status_row, write_results
from ascood.sweep.paths import SweepPaths, results_dir, results_file, safe_name, trial_dir

PLAIN = ["cmnist", "mnist6", "mnist10", "cifar10", "imagenet100", "all"]
PARAMETRIZED = ["cmnist[classes=2]", "cmnist[classes=5]", "aircraft[split=1]", "aircraft[split=1,size=64]",
                "aircraft[split=1, size=64]", "cars[size=32]"]


@pytest.mark.parametrize("name", PLAIN)
def test_a_plain_dataset_name_is_its_own_on_disk_name(tmp_path, name):
    out = str(tmp_path / "out")
    assert safe_name(name) == name
    assert SweepPaths(out).ray == f"{out}/ray"
    assert results_dir(out, name) == f"{out}/results/{name}"
    assert results_file(out, name, "search-0003") == f"{out}/results/{name}/search-0003.parquet"
    assert trial_dir(out, name, "search-0003") == (tmp_path / "out" / "trials" / name / "search-0003", None)


def test_a_parametrized_dataset_name_is_a_safe_name_of_its_own():
    names = [safe_name(n) for n in PARAMETRIZED]
    for raw, name in zip(PARAMETRIZED, names, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), name  # no glob pattern, no `=`, no `/`
        assert name.startswith(raw.partition("[")[0] + "_")
    assert len(set(names)) == len(names), "two datasets never share a directory"
    # the names are part of the output: a sweep written now must resume under a later version
    assert safe_name("cmnist[classes=2]") == "cmnist_classes_2_506a1f74"


def test_results_of_parametrized_datasets_read_back_without_partition_columns(tmp_path):
    """`OUT/results/cmnist[classes=2]/` is a hive partition to pandas and pyarrow: read as a column
    `cmnist[classes` valued `2]` (a directory `classes=2` would be a column `classes`)."""
    out = str(tmp_path / "out")
    benchmarks = ["cmnist", "cmnist[classes=2]", "aircraft[split=1]", "cars[size=32]"]
    for b in benchmarks:
        cfg = validate_config({"benchmark": b})
        row = status_row(cfg, b, "spurious", False, run_id_for(cfg), "failed", "x", RunLabels("t", "t0", "search"))
        write_results(results_file(out, b, "search-0000"), [row])
    assert not [p for p in (tmp_path / "out").rglob("*") if re.search(r"[\[\]=*?]", p.name)]
    for df in (pd.read_parquet(tmp_path / "out" / "results"),
               ds.dataset(tmp_path / "out" / "results", partitioning="hive").to_table().to_pandas(),
               read_results(tmp_path / "out" / "results")):
        assert list(df.columns) == SCHEMA.names
        assert sorted(df["benchmark"]) == sorted(benchmarks)
    assert sorted(os.listdir(tmp_path / "out" / "results")) == sorted(safe_name(b) for b in benchmarks)
