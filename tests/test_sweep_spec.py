"""Bad sweep files: one line naming the file and the field, exit code 2, before Ray starts."""

from pathlib import Path

import pytest
import yaml

from ascood.cli.sweep import main
from ascood.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "name": "t",
    "output": "OUT",
    "datasets": [{"benchmark": "cmnist"}],
    "trial": {"epochs": 1, "scorers": ["msp", "energy"]},
    "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}},
    "objective": {"metric": "val/auroc", "scorer": "energy"},
}


def _write(tmp_path, data) -> Path:
    data = yaml.safe_load(yaml.safe_dump(data).replace("OUT", str(tmp_path / "out")))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fails(capsys, path) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(path)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda d: d.update(budget=3), "budget: unknown key"),
        (lambda d: d["space"].update(temperature={"low": 1, "high": 2}), "space.temperature: unknown key"),
        (lambda d: d.update(num_samples="many"), "num_samples: Input should be a valid integer"),
        (lambda d: d.setdefault("resources", {}).update(max_concurrent_trials=0),
         "resources.max_concurrent_trials: Input should be greater than or equal to 1"),
        (lambda d: d["space"].update(p_inv={"low": 0.5, "high": 0.1}), "space.p_inv: expected low < high"),
        (lambda d: d["space"].update(lam={"low": 0.0, "high": 1.0, "log": True}), "space.lam: a log-scaled range needs low > 0"),
        (lambda d: d["datasets"][0].update(benchmark="imagenet-9"), "unknown benchmark 'imagenet-9'"),
        (lambda d: d["objective"].update(metric="test/auroc"), "objective.metric: only validation metrics may be objectives"),
        (lambda d: d["trial"].update(p_inv=2.0), "datasets[0] (cmnist): p-inv: expected a value in (0, 1]"),
        (lambda d: d["datasets"][0].update(setting="conventional"), "datasets[0].setting: cmnist is spurious, not conventional"),
        (lambda d: d["objective"].update(scorer="odin"), "objective.scorer: odin is not among the trial scorers"),
        (lambda d: d.pop("space"), "space: required field is missing"),
    ],
)
def test_bad_sweep_file(tmp_path, capsys, change, needle):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    change(data)
    path = _write(tmp_path, data)
    err = _fails(capsys, path)
    assert str(path) in err and needle in err
    assert not (tmp_path / "out").exists(), "nothing is created for a bad sweep file"


def test_objective_naming_an_unknown_ood_selection_is_refused(tmp_path, capsys):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["objective"]["ood"] = "letters"
    err = _fails(capsys, _write(tmp_path, data))
    assert "objective.ood: 'letters' is neither a group nor a set of cmnist" in err


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\ndatasets: [cmnist\n")
    err = _fails(capsys, path)
    assert f"{path}:" in err and "not valid YAML" in err


@pytest.mark.parametrize("name", ["quickstart", "spurious", "finegrained", "conventional"])
def test_shipped_sweep_files_validate(name):
    spec, _ = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    assert spec.objective.metric.startswith("val/")


@pytest.mark.parametrize("name, first", [("spurious", "waterbirds"), ("finegrained", "cars"), ("conventional", "cifar10")])
def test_real_sweeps_fail_fast_naming_the_missing_data(tmp_path, capsys, monkeypatch, name, first):
    monkeypatch.setenv("ASCOOD_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    err = _fails(capsys, ROOT / "sweeps" / f"{name}.yaml")
    assert f"dataset {first} not found at {tmp_path / 'data'}" in err
