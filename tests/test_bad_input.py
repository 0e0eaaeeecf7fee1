"""Bad input found by trying the front door as a new user: each is one line, exit 2, nothing created."""

from pathlib import Path

import pytest
import yaml
from test_sweep_spec import BASE  # the smallest valid sweep file

from ascood.cli.sweep import main as sweep_main
from ascood.cli.train import main as train_main


def _one_line_exit_2(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _sweep_file(tmp_path, change=None, out=None) -> Path:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["output"] = str(out or tmp_path / "out")
    if change:
        change(data)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("dims, needle", [
    ({"p_inv": {"low": 0.5, "high": 1.5}}, "space.p_inv: high leaves the domain of p_inv: expected a value in (0, 1], got 1.5"),
    ({"p_inv": {"low": 0.0, "high": 0.5}}, "space.p_inv: low leaves the domain of p_inv: expected a value in (0, 1], got 0.0"),
    ({"sigma": {"low": 0.0, "high": 1.0}}, "space.sigma: low leaves the domain of sigma: expected a value > 0"),
    ({"alpha": {"low": -1.0, "high": 1.0}}, "space.alpha: low leaves the domain of alpha: expected a value >= 0"),
    ({"lambda": {"low": -0.5, "high": 1.0}}, "leaves the domain of lam: expected a value >= 0"),
    ({"lr": {"low": 0.01, "high": float("inf")}}, "space.lr.high: expected a finite number, got inf"),
    ({"alpha_min_ratio": {"low": 0.1, "high": 2.0}}, "space.alpha_min_ratio: high leaves the domain"),
    ({"lr": {"choices": [0.1, -0.1]}}, "space.lr: choice -0.1 leaves the domain of lr"),
    ({"ood_type": {"choices": ["gradient", "cutmix"]}}, "space.ood_type: expected one of gradient"),
])
def test_search_ranges_outside_a_parameters_domain(tmp_path, capsys, dims, needle):
    err = _one_line_exit_2(capsys, sweep_main, [_sweep_file(tmp_path, lambda d: d["space"].update(dims))])
    assert needle in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(num_samples=True), "num_samples: expected an integer, got True"),
    (lambda d: d["resources"].update(max_failures=False) if "resources" in d else d.update(resources={"max_failures": False}),
     "resources.max_failures: expected an integer, got False"),
    (lambda d: d["trial"].update(epochs=True), "epochs: expected an integer, got True"),
    (lambda d: d["trial"].update(lr=float("nan")), "lr: expected a finite number, got nan"),
])
def test_booleans_are_not_integers_and_numbers_are_finite(tmp_path, capsys, change, needle):
    err = _one_line_exit_2(capsys, sweep_main, [_sweep_file(tmp_path, change)])
    assert needle in err and not (tmp_path / "out").exists()


def test_files_that_are_not_utf8_name_the_file_and_byte(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_bytes(b"name: t\noutput: x\ncomment: caf\xe9\n")
    err = _one_line_exit_2(capsys, sweep_main, [sweep])
    assert f"{sweep}: not UTF-8 text (byte 30" in err
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(b"\xff\xfebenchmark: cmnist\n")
    err = _one_line_exit_2(capsys, train_main, ["--config", cfg])
    assert f"{cfg}: not UTF-8 text (byte 0" in err


def test_an_output_that_cannot_be_a_directory_is_refused_before_anything(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    err = _one_line_exit_2(capsys, sweep_main, [_sweep_file(tmp_path, out=a_file)])
    assert f"output {a_file}: exists and is not a directory" in err
    err = _one_line_exit_2(capsys, sweep_main, [_sweep_file(tmp_path, out=a_file / "below")])
    assert f"cannot be created: {a_file} is a file" in err
    assert a_file.read_text() == "x"
    err = _one_line_exit_2(capsys, train_main, ["--benchmark", "cmnist", "--out", a_file])
    assert f"--out {a_file}: exists and is not a directory" in err


def test_resources_that_do_not_fit_leave_no_output_behind(tmp_path, capsys):
    path = _sweep_file(tmp_path, lambda d: d.update(resources={"processes_per_trial": 1, "cpus_per_process": 4096}))
    err = _one_line_exit_2(capsys, sweep_main, [path])
    assert "resources: a trial needs 4096 CPUs" in err
    assert not (tmp_path / "out").exists()


def test_a_missing_weights_file_leaves_no_output_behind(tmp_path, capsys):
    path = _sweep_file(tmp_path, lambda d: d["trial"].update(weights=str(tmp_path / "none.pt")))
    err = _one_line_exit_2(capsys, sweep_main, [path])
    assert "none.pt" in err and not (tmp_path / "out").exists()


def test_a_benchmark_parameter_of_the_wrong_type_is_one_line(tmp_path, capsys):
    err = _one_line_exit_2(capsys, train_main, ["--benchmark", "aircraft[split=banana]", "--out", tmp_path / "r"])
    assert "--benchmark: aircraft[split=…]: expected a whole number, got 'banana'" in err
    assert not (tmp_path / "r").exists()


def test_a_relative_alpha_with_shuffle_is_refused(tmp_path, capsys):
    err = _one_line_exit_2(capsys, sweep_main, [_sweep_file(tmp_path, lambda d: (
        d["trial"].update(alpha_scale="relative"), d["space"].update(ood_type={"choices": ["gradient", "shuffle"]})))])
    assert "space.ood_type: shuffle has no α" in err and not (tmp_path / "out").exists()
    err = _one_line_exit_2(capsys, train_main, ["--alpha-scale", "relative", "--ood-type", "shuffle", "--out", tmp_path / "r"])
    assert "--alpha-scale relative: ood_type shuffle has no α" in err and not (tmp_path / "r").exists()


def _two_datasets(d: dict) -> None:
    d["datasets"] = [{"benchmark": "mnist6"}, {"benchmark": "mnist10"}]


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(robust={}), "robust: a cross-dataset search needs at least two datasets, the sweep has one"),
    (lambda d: (_two_datasets(d), d.update(robust={"trial": {"alpha_scale": "relative"},
                                                   "space": {"ood_type": {"choices": ["gradient", "shuffle"]}}})),
     "robust.space.ood_type: shuffle has no α, so it cannot be searched with a relative alpha_scale"),
    (lambda d: (_two_datasets(d), d.update(robust={}, algorithm={"name": "tpe", "multi_objective": True})),
     "robust: the normalized gain is one number per dataset; it cannot be searched with algorithm.multi_objective"),
    (lambda d: (_two_datasets(d), d.update(robust={"gain_floor": 0})), "robust.gain_floor: Input should be greater than 0"),
    (lambda d: (_two_datasets(d), d.update(robust={"trial": {"method": "ce"}})),
     "robust.trial.method: the robust stage searches ASCOOD's settings, got ce"),
    (lambda d: (_two_datasets(d), d.update(robust={"trial": {"alpha_scale": "sideways"}})), "robust.trial (mnist6)"),
    (lambda d: d.update(transfer={"seeds": [0, 1, 2], "max_seeds": 2}),
     "transfer: max_seeds: expected at least the 3 seeds of transfer.seeds, got 2"),
])
def test_robust_stage_bad_input(tmp_path, capsys, change, needle):
    err = _one_line_exit_2(capsys, sweep_main, [_sweep_file(tmp_path, change)])
    assert needle in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--method", "vos2"], "--method: expected one of ascood, ce, logitnorm, t2fnorm, vos, oe, mixoe, got 'vos2'"),
    (["--method", "ce", "--logitnorm-tau", "0.1"], "--logitnorm-tau: an option of method logitnorm, not of method ce"),
    (["--method", "t2fnorm", "--t2fnorm-tau", "0"], "--t2fnorm-tau: Input should be greater than 0"),
])
def test_an_unknown_method_or_another_methods_option_is_refused(tmp_path, capsys, argv, needle):
    err = _one_line_exit_2(capsys, train_main, [*argv, "--out", tmp_path / "r"])
    assert needle in err
    assert not (tmp_path / "r").exists()


def test_a_name_too_long_and_an_output_the_filesystem_refuses_are_one_line(tmp_path, capsys):
    """Found on the way to fast refusals: a 100,000-character name hung for minutes in Rich's
    highlighter; `output: /proc/x` (allowed by the permissions, refused by the filesystem) ended
    in a FileNotFoundError traceback."""
    from ascood.sweep.spec import NAME_MAX

    long_name = _sweep_file(tmp_path, lambda d: d.update(name="n" * 100_000))
    err = _one_line_exit_2(capsys, sweep_main, [long_name])
    assert f"name: String should have at most {NAME_MAX} characters" in err
    if Path("/proc").is_dir():
        proc = _sweep_file(tmp_path, out="/proc/ascood-x")
        err = _one_line_exit_2(capsys, sweep_main, [proc])
        assert "output /proc/ascood-x: cannot be created in /proc" in err
