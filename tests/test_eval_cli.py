import subprocess
import sys

import pandas as pd
import pytest

from ascood.cli.eval import main
from ascood.config import validate_config
from ascood.trial import run_trial

KEY = ["split", "ood_set", "scorer"]
METRICS = ["auroc", "fpr95", "aupr_in", "aupr_out", "id_accuracy"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        cfg = validate_config(dict(benchmark="cmnist[classes=2]", epochs=1, batch_size=32, seed=seed,
                                   scorers="msp,energy,odin,iodin"))
        assert run_trial(cfg, root / f"seed{seed}").status == "completed"
    return root


def test_ascood_eval_reproduces_the_training_runs_metrics(runs):
    proc = subprocess.run(
        [sys.executable, "-m", "ascood.cli.eval", str(runs / "seed0"), "--scorers", "msp,energy,odin,iodin", "--no-search"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    trained = pd.read_parquet(runs / "seed0" / "results.parquet").set_index(KEY)[METRICS].sort_index()
    evaluated = pd.read_parquet(runs / "seed0" / "eval.parquet")
    assert (evaluated["stage"] == "eval").all() and (evaluated["scorer_selection"] == "fixed").all()
    pd.testing.assert_frame_equal(evaluated.set_index(KEY)[METRICS].sort_index(), trained)
    assert (runs / "seed0" / "features" / "cmnist[classes=2]-epoch1.pt").exists()
    assert "AUROC" in proc.stdout and "odin" in proc.stdout


def test_ascood_eval_full_suite_with_search_over_seeds(runs, tmp_path, capsys):
    out = tmp_path / "all.parquet"
    assert main([str(runs / "seed0"), str(runs / "seed1"), "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    from ascood.scorers import SCORERS

    assert set(df["scorer"]) == set(SCORERS) and df["run_id"].nunique() == 2
    searched = df.drop_duplicates("scorer").set_index("scorer")["scorer_selection"]
    assert searched["knn"] == "val-auroc" and searched["msp"] == "fixed"
    assert df[["auroc", "fpr95"]].notna().all().all()
    assert "±" in capsys.readouterr().out


def test_ascood_eval_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2 and "no checkpoint.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--scorers", "msp,mahalanobis"])
    assert exc.value.code == 2 and "--scorers: unknown mahalanobis" in capsys.readouterr().err


def test_ascood_eval_on_another_benchmark_labels_rows_with_it(runs, tmp_path):
    """Rows measured on `--benchmark X` say X (and X's OOD sets), not the training benchmark."""
    from ascood.data import fixtures
    from ascood.data.real import definitions

    root = tmp_path / "data"
    fixtures.write_native(root, "waterbirds")
    out = tmp_path / "wb.parquet"
    assert main([str(runs / "seed0"), "--benchmark", "waterbirds[size=32]", "--data-root", str(root),
                 "--scorers", "msp,energy", "--no-search", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert set(df["benchmark"]) == {"waterbirds[size=32]"}
    assert set(df.loc[df["split"] == "test", "ood_set"]) == {o.name for o in definitions()["waterbirds"].ood}
    assert df["run_id"].nunique() == 1 and df["run_id"].iloc[0].startswith("cmnist[classes=2]-"), "the run keeps its identity"
