"""The three real sweep files run end to end on fixture data (tiny images, one epoch): the wiring
from sweep file through data root, loaders, geometry, trials, scorers and Parquet."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ascood.data import fixtures

REPO = Path(__file__).resolve().parents[1]

# (sweep file, {benchmark: layout}, data root given by the sweep file or by --data-root)
CASES = [
    ("spurious", {"waterbirds": "native", "celeba": "openood"}, "file"),
    ("finegrained", {"cars": "openood", "aircraft": "native"}, "flag"),
    ("conventional", {"cifar10": "native", "cifar100": "openood", "imagenet100": "native"}, "file"),
]


def _shrunk(sweep: str, out: Path, root: Path, via: str) -> Path:
    """The real sweep file with its trials made tiny; the search space, objective, scorers and
    per-dataset settings kept."""
    spec = yaml.safe_load((REPO / "sweeps" / f"{sweep}.yaml").read_text())
    spec["output"] = str(out)
    if via == "file":
        spec["data_root"] = str(root)
    for d in spec["datasets"]:
        d["benchmark"] = f"{d['benchmark']}[size=32]"
        for key in ("backbone", "batch_size", "weights", "epochs"):
            d.get("trial", {}).pop(key, None)
    spec["trial"].pop("weights", None)
    spec["trial"].update(backbone="small_cnn", epochs=1, batch_size=32, eval_batch_size=256, num_workers=0)
    spec["num_samples"] = 2
    for key in ("scheduler", "transfer"):
        spec.pop(key, None)
    spec["final"] = None
    if sweep == "finegrained":  # every baseline method on real-format data, outliers from a folder
        spec["final"] = {"seeds": [0]}
        spec["outliers"] = str(write_outlier_folder(out.parent / "outliers"))
    else:
        spec.pop("baselines")
        spec.pop("outliers")
    spec["resources"] = {"processes_per_trial": 1, "cpus_per_process": 1, "gpus_per_process": 0, "max_concurrent_trials": 2}
    path = out.parent / f"{sweep}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_outlier_folder(folder: Path, n: int = 24) -> Path:
    """External outliers for the oe/mixoe baselines: smooth random colour fields, JPEG and PNG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((48, 40), Image.BILINEAR)
        img.save(folder / (f"{i}.jpg" if i % 2 else f"{i}.png"))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("sweep, layouts, via", CASES, ids=[c[0] for c in CASES])
def test_real_sweep_file_runs_on_fixture_data(tmp_path, sweep, layouts, via):
    root = tmp_path / "data"
    for name, layout in layouts.items():
        (fixtures.write_native if layout == "native" else fixtures.write_openood)(root, name)
    file = _shrunk(sweep, tmp_path / "out", root, via)
    extra = ["--data-root", str(root)] if via == "flag" else []
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(file), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "out" / "results")
    spec = yaml.safe_load(file.read_text())
    assert set(df["benchmark"]) == {f"{n}[size=32]" for n in layouts}
    assert (df["status"] == "completed").all()
    from ascood.data import load_benchmark
    from ascood.data.real import definitions

    if spec.get("baselines"):
        compared = df[df["stage"] == "comparison"].drop_duplicates("trial_id")
        assert sorted(compared["method"]) == sorted(
            ["ce", "oe", "logitnorm", "t2fnorm", "vos", "mixoe"] * len(layouts))
        df = df[df["stage"] == "search"]
    for name in layouts:
        rows = df[df["benchmark"] == f"{name}[size=32]"]
        assert rows["trial_id"].nunique() == 2
        test = rows[rows["split"] == "test"]
        assert set(test["ood_set"]) == {o.name for o in definitions()[name].ood}
        assert set(test["scorer"]) == set(spec["trial"]["scorers"])
        data = load_benchmark(f"{name}[size=32]", root=root)
        val = rows[rows["split"] == "val"]
        assert set(val["ood_set"]) == {o.name for o in data.ood if len(o.val)}, "only sets with a val half"
        assert val["auroc"].notna().all() and test["auroc"].notna().all()


def test_real_sweep_without_data_stops_before_any_trial(tmp_path):
    file = _shrunk("finegrained", tmp_path / "out", tmp_path / "nothing-here", "file")
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(file), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "dataset cars not found at" in proc.stderr and "nothing-here" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_sweep_with_missing_or_mismatched_weights_stops_before_any_trial(tmp_path):
    import torch
    from torchvision.models import resnet18

    spec = {
        "name": "w", "output": str(tmp_path / "out"), "datasets": [{"benchmark": "cmnist"}],
        "trial": {"epochs": 1, "backbone": "resnet18", "weights": str(tmp_path / "missing.pth")},
        "space": {"alpha": {"low": 0.01, "high": 1.0, "log": True}}, "num_samples": 1,
        "objective": {"metric": "val/auroc", "scorer": "msp"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1},
    }
    file = tmp_path / "w.yaml"
    file.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(file), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "trial.weights" in proc.stderr and "missing.pth" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    wrong = resnet18(num_classes=10).state_dict()
    wrong["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(wrong, tmp_path / "wrong.pth")
    spec["trial"]["weights"] = str(tmp_path / "wrong.pth")
    file.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(file), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "does not fit" in proc.stderr, proc.stderr
