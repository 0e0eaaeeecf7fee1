"""A results directory is one Parquet dataset: pandas, pyarrow.dataset, DuckDB and polars read every
file with the schema's types, the same rows and the schema version in each file's metadata; and the
DuckDB and polars queries docs/results-schema.md shows answer what pandas computes from the same rows.

The directory holds what a sweep writes, through the real writers and sweep paths: search trials
(completed, stopped early, failed before evaluating), final seeds (one reused from the search, one
with a failed scorer, one failed), the CE baseline, comparison baselines (CE reused from the baseline,
OE still running), a robust trial with normalized gains; and the files a real `ascood-train` run and
`ascood-eval` write (no sweep labels: columns null in every row of the file).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ascood.config import validate_config
from ascood.evaluate import SetResult, SplitResult
from ascood.metrics import OODMetrics
from ascood.results import (
    SCHEMA,
    SCHEMA_VERSION,
    SETTING_COLUMNS,
    VERSION_KEY,
    RunLabels,
    group_means,
    make_rows,
    read_results,
    read_rows,
    reused,
    run_id_for,
    select,
    status_row,
    with_status,
    write_results,
)
from ascood.scorers import SCORERS
from ascood.sweep.paths import results_file, trial_key
from ascood.sweep.spec import Objective
from ascood.sweep.trainable import gain_rows

DOC = Path(__file__).resolve().parent.parent / "docs" / "results-schema.md"
DOC_RESULTS = "runs/quickstart/results"  # the path the documented queries read
SWEEP = "engines"
EPOCHS = 2
SCORER_NAMES = ("msp", "energy", "vim")
OBJECTIVE = Objective(metric="val/auroc", scorer="energy")
SETS = {
    "cmnist": ("spurious", [("digits-5to9-on-colour", "spurious"), ("textures", "far"), ("photos", "far"), ("noise", "far")]),
    "mnist6": ("fine-grained", [("digits-0167", "near"), ("textures", "far"), ("photos", "far"), ("noise", "far")]),
}
BEST = {"alpha_max": 3.0, "p_inv": 0.2, "lam": 1.5, "sigma": 0.5}
OTHER = {"alpha_max": 30.0, "p_inv": 0.05, "lam": 0.2, "sigma": 1.5}

DUCKDB_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
                pa.bool_(): "BOOLEAN"}
POLARS_TYPES = {pa.int32(): pl.Int32, pa.int64(): pl.Int64, pa.float64(): pl.Float64, pa.string(): pl.String,
                pa.bool_(): pl.Boolean}


class Dataset:
    """Writes result files as the sweep does and counts the rows it wrote."""

    def __init__(self, out: Path, rng: np.random.Generator):
        self.out, self.rng, self.rows = str(out), rng, 0

    def cfg(self, benchmark: str, method: str = "ascood", seed: int = 0, **options):
        extra = {"outliers": "embedded"} if method == "oe" else {}
        return validate_config(dict(benchmark=benchmark, method=method, seed=seed, epochs=EPOCHS,
                                    scorers=",".join(SCORER_NAMES), **extra, **options))

    def epoch_rows(self, cfg, labels: RunLabels, epoch: int, failing: str | None = None) -> list[dict]:
        setting, sets = SETS[cfg.benchmark]
        splits = []
        for split in ("val", "test"):
            results = []
            for ood_set, group in sets:
                for scorer in SCORER_NAMES:
                    if scorer == failing:
                        results.append(SetResult(ood_set, group, scorer, 500, None, "LinAlgError: singular covariance"))
                        continue
                    auroc, aupr = self.rng.uniform(50, 100, size=2)
                    results.append(SetResult(ood_set, group, scorer, 500,
                                             OODMetrics(float(auroc), float(100 - auroc), float(aupr), float(aupr - 1))))
            splits.append(SplitResult(split, float(self.rng.uniform(80, 99)), 1000, results))
        return make_rows(cfg, cfg.benchmark, setting, True, run_id_for(cfg), epoch, splits,
                         [SCORERS[n]() for n in SCORER_NAMES], searched=False, train_loss=float(self.rng.uniform(0.1, 2)),
                         wall_time_s=float(epoch * 10), labels=labels,
                         alpha_eff=None if cfg.method != "ascood" else cfg.alpha_max)

    def write(self, path: str, rows: list[dict]) -> str:
        write_results(path, rows)
        self.rows += len(rows)
        return path

    def trained(self, stage: str, cfg, key: str | None = None, *, epochs: int = EPOCHS, status: str = "completed",
                failing: str | None = None, reason: str | None = None) -> str:
        key = key or trial_key(stage, {}, run_id_for(cfg))
        labels = RunLabels(SWEEP, f"{stage}_{key[-4:]}", stage)
        rows = [r for e in range(1, epochs + 1) for r in self.epoch_rows(cfg, labels, e, failing)]
        return self.write(results_file(self.out, cfg.benchmark, key), with_status(rows, status, reason))

    def failed(self, stage: str, cfg, key: str | None = None) -> str:
        key = key or trial_key(stage, {}, run_id_for(cfg))
        row = status_row(cfg, cfg.benchmark, SETS[cfg.benchmark][0], True, run_id_for(cfg), "failed",
                         "loss became nan in epoch 1", RunLabels(SWEEP, f"{stage}_{key[-4:]}", stage))
        return self.write(results_file(self.out, cfg.benchmark, key), [row])

    def reuse(self, stage: str, cfg, source: str) -> str:
        """What `reuse_run` records: the original's rows read back and relabelled for this stage."""
        key = trial_key(stage, {}, run_id_for(cfg))
        original = read_rows(results_file(self.out, cfg.benchmark, source))
        rows = reused(original, RunLabels(SWEEP, f"{stage}_{key[-4:]}", stage), source)
        return self.write(results_file(self.out, cfg.benchmark, key), rows)


def _cli(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, *args], check=True, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, int]:
    """(the results directory, how many rows were written to it)."""
    root = tmp_path_factory.mktemp("engines")
    out = root / "out"
    data = Dataset(out, np.random.default_rng(0))
    for benchmark in SETS:
        best, other = data.cfg(benchmark, **BEST), data.cfg(benchmark, **OTHER)
        data.trained("search", best, "search-0000")
        data.trained("search", other, "search-0001", epochs=1, status="stopped-early")
        data.failed("search", data.cfg(benchmark, alpha_max=90.0), "search-0002")
        data.reuse("final", best, "search-0000")
        data.trained("final", data.cfg(benchmark, seed=1, **BEST))
        data.trained("final", data.cfg(benchmark, seed=2, **BEST), failing="vim")
        data.failed("final", data.cfg(benchmark, seed=3, **BEST))
        baseline = data.trained("baseline", data.cfg(benchmark, "ce"))
        data.reuse("comparison", data.cfg(benchmark, "ce"), Path(baseline).stem)
        for seed in (1, 2):
            data.trained("comparison", data.cfg(benchmark, "ce", seed))
        for seed in (0, 1):
            data.trained("comparison", data.cfg(benchmark, "oe", seed))
        data.trained("comparison", data.cfg(benchmark, "oe", 2), epochs=1, status="running")
        joint = data.cfg(benchmark, alpha_scale="relative", alpha_max=0.03, alpha_min=0.003)
        rows = [r for e in (1, 2) for r in data.epoch_rows(joint, RunLabels(SWEEP, "robust_0000", "robust"), e)]
        rows = gain_rows(with_status(rows, "completed", None), objective=OBJECTIVE, ce=70.0, floor=5.0)
        data.write(results_file(str(out), benchmark, "robust-0000"), rows)

    run = root / "train-run"
    _cli("ascood.cli.train", "--benchmark", "cmnist[classes=2]", "--epochs", "1", "--scorers", "msp,energy",
         "--out", str(run), "--no-progress")
    _cli("ascood.cli.eval", str(run), "--scorers", "msp,energy,vim", "--no-search", "--out", str(root / "eval.parquet"))
    for name, source in (("train", run / "results.parquet"), ("eval", root / "eval.parquet")):
        target = out / "results" / name / f"{name}.parquet"
        target.parent.mkdir(parents=True)
        shutil.copy(source, target)
        data.rows += pq.ParquetFile(target).metadata.num_rows
    return out / "results", data.rows


def _files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.parquet"))


def test_every_file_has_the_schema_typed_nulls_and_the_version(results):
    directory, _ = results
    files = _files(directory)
    assert len(files) == 2 * 15 + 2
    expected_duckdb = [(f.name, DUCKDB_TYPES[f.type]) for f in SCHEMA]
    null_in_a_whole_file = set()
    for f in files:
        assert pq.read_schema(f).equals(SCHEMA, check_metadata=True), f
        table = pq.read_table(f)
        null_in_a_whole_file |= {c for c in SCHEMA.names if table.column(c).null_count == len(table)}
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{f}')").fetchall()
        assert [(name, kind) for name, kind, *_ in described] == expected_duckdb, f
        assert pq.read_metadata(f).metadata[VERSION_KEY.encode()] == str(SCHEMA_VERSION).encode()
        assert pl.read_parquet_metadata(f)[VERSION_KEY] == str(SCHEMA_VERSION)
    # what the edge cases are made of: columns that no row of some file holds still carry their type
    assert {"sweep", "stage", "trial_id", "auroc", "split", "scorer_error", "norm_gain", "reused_from"} <= null_in_a_whole_file
    versions = duckdb.sql(f"SELECT file_name, value FROM parquet_kv_metadata('{directory}/**/*.parquet') "
                          f"WHERE key = '{VERSION_KEY}'").fetchall()
    assert sorted(Path(name) for name, _ in versions) == files
    assert {value for _, value in versions} == {str(SCHEMA_VERSION).encode()}


def test_pandas_pyarrow_duckdb_and_polars_read_the_same_rows_and_types(results):
    directory, rows = results
    glob = f"{directory}/**/*.parquet"
    dataset = ds.dataset(directory, format="parquet")
    assert dataset.schema.equals(SCHEMA)
    arrow = dataset.to_table()
    duck = duckdb.sql(f"SELECT * FROM read_parquet('{glob}')")
    polars = pl.read_parquet(glob)
    lazy_count = pl.scan_parquet(glob).select(pl.len()).collect().item()
    numpy_backed = pd.read_parquet(directory)
    arrow_backed = pd.read_parquet(directory, dtype_backend="pyarrow")
    assert arrow.num_rows == len(duck) == polars.height == lazy_count == len(numpy_backed) == len(arrow_backed) == rows

    assert duck.columns == polars.columns == list(numpy_backed.columns) == list(arrow_backed.columns) == SCHEMA.names
    assert [str(t) for t in duck.types] == [DUCKDB_TYPES[f.type] for f in SCHEMA]
    assert list(polars.schema.values()) == [POLARS_TYPES[f.type] for f in SCHEMA]
    assert list(arrow_backed.dtypes) == [pd.ArrowDtype(f.type) for f in SCHEMA]
    for field in SCHEMA:  # numpy-backed pandas: integers with nulls become float64, as pandas always does
        has_nulls = arrow.column(field.name).null_count > 0
        expected = {pa.int32(): "float64" if has_nulls else "int32", pa.int64(): "float64" if has_nulls else "int64",
                    pa.float64(): "float64", pa.string(): "str", pa.bool_(): "bool"}[field.type]
        assert str(numpy_backed[field.name].dtype) == expected, field.name

    order = [(c, "ascending") for c in ("run_id", "stage", "trial_id", "epoch", "split", "ood_set", "scorer")]
    reference = arrow.sort_by(order)
    for table in (duck.to_arrow_table(), polars.to_arrow(), pa.Table.from_pandas(arrow_backed, preserve_index=False)):
        assert table.cast(SCHEMA).sort_by(order).equals(reference.cast(SCHEMA))
    assert read_results(directory).shape == (rows, len(SCHEMA))


def _documented(kind: str) -> dict[str, str]:
    """The doc's fenced blocks of `kind` (sql or python), by the `<!-- query: NAME -->` line above each."""
    found = re.findall(rf"<!-- query: ([\w-]+) -->\n```{kind}\n(.*?)```", DOC.read_text(), re.S)
    return {name: text for name, text in found}


def _run_here(text: str, directory: Path) -> str:
    assert DOC_RESULTS in text, "the documented query reads the quickstart's results"
    return text.replace(DOC_RESULTS, str(directory))


def _expected_best(df: pd.DataFrame) -> pd.DataFrame:
    final = select(df, stage="final", split="test", scorer=OBJECTIVE.scorer, completed=True, final_epoch=True)
    runs = final[["run_id", "benchmark", *SETTING_COLUMNS]].drop_duplicates()
    per_seed = group_means(final).merge(runs, on="run_id")
    out = per_seed.groupby(["benchmark", "ood_group"], as_index=False).agg(
        seeds=("auroc", "size"), test_auroc=("auroc", "mean"), test_auroc_std=("auroc", lambda x: x.std(ddof=0)))
    return out.merge(runs.drop(columns="run_id").drop_duplicates(), on="benchmark")


def _expected_versus(df: pd.DataFrame) -> pd.DataFrame:
    rows = pd.concat([select(df, stage=s, split="test", scorer=OBJECTIVE.scorer, completed=True, final_epoch=True)
                      for s in ("final", "comparison", "baseline")])
    rows = rows[rows["method"].isin(["ascood", "ce"])]
    per_run = group_means(rows).drop_duplicates(["run_id", "ood_group"])
    per_run = per_run.merge(rows[["run_id", "benchmark", "method"]].drop_duplicates(), on="run_id")
    stats = per_run.groupby(["benchmark", "ood_group", "method"])["auroc"].agg(["mean", "size"]).unstack("method")
    out = pd.DataFrame({"ascood_auroc": stats[("mean", "ascood")], "ce_auroc": stats[("mean", "ce")],
                        "ascood_seeds": stats[("size", "ascood")], "ce_seeds": stats[("size", "ce")]}).reset_index()
    return out.assign(gain=out["ascood_auroc"] - out["ce_auroc"])


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    keys = ["benchmark", "ood_group"]
    got = got.sort_values(keys).reset_index(drop=True)
    expected = expected.sort_values(keys).reset_index(drop=True)
    assert set(expected.columns) <= set(got.columns), sorted(set(expected.columns) - set(got.columns))
    for c in expected.columns:
        if pd.api.types.is_numeric_dtype(expected[c]):
            np.testing.assert_allclose(got[c].to_numpy(float), expected[c].to_numpy(float), rtol=1e-12, err_msg=c)
        else:
            assert got[c].tolist() == expected[c].tolist(), c


def test_the_documented_queries_answer_what_pandas_computes(results):
    directory, _ = results
    df = read_results(directory)
    best, versus = _expected_best(df), _expected_versus(df)
    # the dataset makes every filter count: seed 3 failed, CE seed 0 is in two stages, OE is no CE
    assert set(best["seeds"]) == {3} and len(best) == 4
    assert set(versus["ascood_seeds"]) == set(versus["ce_seeds"]) == {3} and len(versus) == 4
    assert (best["alpha_max"] == BEST["alpha_max"]).all()

    sql = _documented("sql")
    assert set(sql) == {"best-setting", "ascood-vs-ce"}
    _same(duckdb.sql(_run_here(sql["best-setting"], directory)).df(), best)
    _same(duckdb.sql(_run_here(sql["ascood-vs-ce"], directory)).df(), versus)

    python = _documented("python")
    assert set(python) == {"polars"}
    namespace: dict = {}
    exec(_run_here(python["polars"], directory), namespace)  # the doc's own code, as a user runs it
    _same(namespace["best"].to_pandas(), best)
    _same(namespace["versus"].to_pandas(), versus)
