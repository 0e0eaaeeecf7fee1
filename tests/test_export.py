"""ascood-export, the bundle, `Detector`, ascood-score and the ONNX graph, on a real trained embedded run.

One run of `cmnist[classes=2]` (one epoch) is exported with a logit scorer (energy), two fitted
feature scorers (KNN, searched; MDS) and an input-gradient scorer (ODIN); every number compared
below is recomputed from images, never copied from the bundle.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ascood.cli.eval import main as eval_main
from ascood.cli.export import main as export_main
from ascood.cli.score import main as score_main
from ascood.config import validate_config
from ascood.data import load_benchmark
from ascood.detector import Detector
from ascood.export import bundle as B
from ascood.export.build import ExportOptions, export_run
from ascood.export.threshold import ThresholdError, calibrate, rate
from ascood.metrics import ood_metrics
from ascood.trial import run_trial

BENCHMARK = "cmnist[classes=2]"
EXPORTS = {  # bundle → (scorer, search, onnx)
    "energy": ("energy", False, True),
    "knn": ("knn", True, True),
    "mds": ("mds", False, True),
    "odin": ("odin", False, False),
}
METRICS = ["auroc", "fpr95", "aupr_in", "aupr_out"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export-run") / "run"
    cfg = validate_config(dict(benchmark=BENCHMARK, epochs=1, batch_size=32, seed=0, scorers="msp,energy"))
    assert run_trial(cfg, out).status == "completed"
    return out


@pytest.fixture(scope="module")
def data():
    return load_benchmark(BENCHMARK)


@pytest.fixture(scope="module")
def bundles(run, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for key, (scorer, search, onnx) in EXPORTS.items():
        built[key] = export_run(run, root / key, ExportOptions(scorer=scorer, search=search, onnx=onnx, device="cpu"))
        out[key] = root / key
    return out


built: dict = {}  # bundle → what `export_run` built (the scores it calibrated on)


def _predict(detector: Detector, images: torch.Tensor):
    return detector.predict_all(images, batch_size=128)


def test_bundle_files_load_without_pickle(bundles):
    for key, path in bundles.items():
        files = {p.name for p in path.iterdir()}
        want = {B.MANIFEST, B.WEIGHTS, B.SCORER_STATE, B.MODEL_CARD} | ({B.ONNX} if EXPORTS[key][2] else set())
        assert files == want, key
        manifest = json.loads((path / B.MANIFEST).read_text())
        assert manifest["schema_version"] == B.SCHEMA_VERSION
        assert set(manifest["files"]) == want - {B.MANIFEST}
    # the fitted state is tensors: KNN's bank is the ID training features, MDS's means one per class
    from safetensors.torch import load_file

    knn = load_file(str(bundles["knn"] / B.SCORER_STATE))
    assert knn["bank"].shape == (len(load_benchmark(BENCHMARK).train), 128)
    mds = load_file(str(bundles["mds"] / B.SCORER_STATE))
    assert mds["means"].shape == (2, 128) and mds["precision"].shape == (128, 128)


def test_bundle_scores_equal_ascood_eval(run, bundles, data, tmp_path):
    """Metrics of the scores the Detector gives the test images = ascood-eval's rows for the same
    scorer and parameters (KNN searched on validation, energy and MDS fixed); ODIN's scores = the
    evaluator's own input-gradient passes (what ascood-eval runs), which the bundle was measured on."""
    searched, fixed = tmp_path / "searched.parquet", tmp_path / "fixed.parquet"
    assert eval_main([str(run), "--scorers", "knn", "--out", str(searched)]) == 0
    assert eval_main([str(run), "--scorers", "energy,mds", "--no-search", "--out", str(fixed)]) == 0
    rows = pd.concat([pd.read_parquet(searched), pd.read_parquet(fixed)])
    rows = rows[rows["split"] == "test"]
    for key, path in bundles.items():
        det = Detector.load(path, device="cpu")
        m = det.manifest
        pred = _predict(det, data.test.images)
        id_scores = pred.scores.numpy()
        np.testing.assert_allclose(id_scores, built[key].scores[("test", "id")], rtol=1e-5, atol=1e-7)
        accuracy = 100 * float((pred.classes == data.test.labels).float().mean())
        assert accuracy == pytest.approx(m.test.id_accuracy, abs=1e-9)
        mine = rows[rows["scorer"] == m.scorer.name].set_index("ood_set")
        if key != "odin":
            assert json.loads(mine["scorer_params"].iloc[0]) == m.scorer.params, key
            assert accuracy == pytest.approx(float(mine["id_accuracy"].iloc[0]), abs=1e-9)
        for o in data.ood_sets("test"):
            ood_scores = _predict(det, o.test.images).scores.numpy()
            np.testing.assert_allclose(ood_scores, built[key].scores[("test", o.name)], rtol=1e-5, atol=1e-7)
            got = ood_metrics(id_scores, ood_scores)
            reported = next(r for r in m.test.ood if r.ood_set == o.name)
            for metric in METRICS:
                assert getattr(got, metric) == pytest.approx(getattr(reported, metric), rel=1e-6, abs=1e-6), (key, o.name)
                if key != "odin":
                    assert getattr(got, metric) == pytest.approx(mine.loc[o.name, metric], rel=1e-6, abs=1e-6), (key, o.name)
            assert reported.fpr_at_threshold == rate(ood_scores, det.threshold)
        assert m.test.id_tpr == rate(id_scores, det.threshold)


def test_threshold_is_calibrated_on_validation_within_one_sample(bundles, data):
    """The rule holds exactly on the validation scores it was calibrated on; the Detector's own
    scores of the validation images (other batches: float rounding may differ) reach the target
    within one sample."""
    for key, path in bundles.items():
        det = Detector.load(path, device="cpu")
        th = det.manifest.threshold
        calibrated = built[key].scores[("val", "id")]
        n = len(calibrated)
        assert th.n_val_id == n == len(data.val) and th.target_tpr == 0.95
        assert float((calibrated >= det.threshold).mean()) == th.val_id_tpr >= 0.95
        above = calibrated[calibrated > det.threshold]
        assert len(above) / n < 0.95, "the largest such threshold: the next score up keeps too few"
        assert th.val_id_tpr - 0.95 < max(1, int((calibrated == det.threshold).sum())) / n
        val = _predict(det, data.val.images).scores.numpy()
        np.testing.assert_allclose(val, calibrated, rtol=1e-5, atol=1e-7)
        assert abs(float((val >= det.threshold).mean()) - 0.95) <= 1 / n, key


def test_calibrate_rule():
    scores = np.arange(1, 101, dtype=np.float64)  # 100 scores 1…100
    assert calibrate(scores, 0.95) == 6.0  # 95 scores are ≥ 6
    assert calibrate(scores, 0.951) == 5.0  # 95.1% needs 96 of them
    assert calibrate(np.array([3.0, 3.0, 3.0, 1.0]), 0.5) == 3.0  # ties: 75% reached
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ThresholdError, match="--tpr"):
            calibrate(scores, bad)


def _write_images(folder, images: torch.Tensor, prefix: str, fmt: str = "PNG") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"{prefix}{i:04d}.{fmt.lower()}"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p, format=fmt)
        paths.append(p)
    return paths


def test_ascood_score_reproduces_the_test_operating_point(bundles, data, tmp_path, capsys):
    """PNG files of the ID test set and of one OOD test set (listed in an image list), a corrupt
    file and a few JPEGs: the CSV's flags give the bundle's test TPR and that set's FPR exactly; the
    Python API gives the same rows."""
    textures = next(o for o in data.ood_sets("test") if o.name == "textures")
    _write_images(tmp_path / "id", data.test.images, "id")
    ood_paths = _write_images(tmp_path / "ood", textures.test.images, "tex")
    _write_images(tmp_path / "jpeg", data.test.images[:5], "j", "JPEG")
    (tmp_path / "id" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    listing = tmp_path / "ood.txt"
    listing.write_text("".join(f"ood/{p.name} -1\n" for p in ood_paths))
    for key in ("knn", "odin"):
        bundle = bundles[key]
        csv = tmp_path / f"{key}.csv"
        code = score_main([str(bundle), str(tmp_path / "id"), str(listing), str(tmp_path / "jpeg"), "--out", str(csv),
                           "--batch-size", "64", "--device", "cpu"])
        captured = capsys.readouterr()
        assert code == 0
        assert "broken.png: unreadable image" in captured.err and "1 unreadable image(s) skipped" in captured.out
        df = pd.read_csv(csv)
        assert len(df) == len(data.test) + len(textures.test) + 5
        m = B.read_manifest(bundle)
        ids = df[df["file"].str.contains("/id/")]
        ood = df[df["file"].str.contains("/ood/")]
        assert len(ids) == len(data.test) and len(ood) == len(textures.test)
        assert float((~ids["ood"]).mean()) == m.test.id_tpr
        assert float((~ood["ood"]).mean()) == next(o.fpr_at_threshold for o in m.test.ood if o.ood_set == "textures")
        assert (ids["class_name"] == ids["class"].map(dict(enumerate(m.class_names)))).all()
        api = Detector.load(bundle, device="cpu").score_files([tmp_path / "id", listing, tmp_path / "jpeg"], batch_size=100)
        assert api.skipped[0][0].endswith("broken.png") and len(api.skipped) == 1
        pd.testing.assert_frame_equal(api.table[["file", "class", "ood"]], df[["file", "class", "ood"]])
        np.testing.assert_allclose(api.table["score"], df["score"], rtol=1e-6)
    assert score_main([str(bundles["energy"]), str(tmp_path / "jpeg")]) == 0
    assert "OOD" in capsys.readouterr().out


def test_onnx_runtime_equals_pytorch(bundles, data):
    """One graph, checked by onnx.checker, run by ONNX Runtime: the network's logits and features
    equal PyTorch's to 1e-4 relative, and the graph's scorer is the scorer (its scores are exactly
    what the scorer computes from ONNX Runtime's own features). The final scores agree to 1e-4
    relative except where the scorer itself amplifies the network's float rounding: MDS's precision
    matrix (the pseudo-inverse of an ill-conditioned covariance after one epoch) is measured and
    printed, not asserted at 1e-4."""
    import onnx

    from ascood.export.onnx import run_onnx
    from ascood.scorers import Outputs

    images = torch.cat([data.test.images[:150], *(o.test.images[:40] for o in data.ood_sets("test"))])
    worst = {}
    for key, path in bundles.items():
        if not EXPORTS[key][2]:
            continue
        onnx.checker.check_model(str(path / B.ONNX), full_check=True)
        det = Detector.load(path, device="cpu")
        for batch in (images, images[:1], images[:7]):  # the batch dimension is dynamic
            out = run_onnx(path / B.ONNX, batch)
            x = det.pipeline(batch)
            with torch.no_grad():
                logits, h = det.model.forward_with_features(x)
            for name, ref in (("logits", logits), ("features", h)):
                scale = float(ref.abs().max())
                np.testing.assert_allclose(out[name], ref.numpy(), rtol=1e-4, atol=1e-4 * scale, err_msg=f"{key} {name}")
            np.testing.assert_array_equal(out["class"], logits.argmax(dim=1).numpy())
            own = Outputs(torch.from_numpy(out["logits"]), torch.from_numpy(out["features"]), torch.zeros(len(batch)).long())
            np.testing.assert_allclose(out["score"], det.scorer.postprocess(own).float().numpy(), rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(out["ood"], out["score"] < det.threshold)
        ref = det.predict(images)
        out = run_onnx(path / B.ONNX, images)
        rel = np.abs(out["score"] - ref.scores.numpy()) / np.maximum(np.abs(ref.scores.numpy()), 1e-12)
        worst[key] = float(rel.max())
        if key != "mds":
            assert worst[key] <= 1e-4, (key, worst[key])
            near = np.abs(ref.scores.numpy() - det.threshold) <= 1e-4 * abs(det.threshold) + 1e-7
            assert (out["ood"] == ref.ood.numpy())[~near].all()
    print(f"ONNX Runtime vs PyTorch, max relative score difference: {worst}")


def test_model_card_holds_the_measured_numbers(bundles):
    for path in bundles.values():
        m = B.read_manifest(path)
        card = (path / B.MODEL_CARD).read_text()
        assert BENCHMARK in card and "spurious" in card and "embedded" in card
        assert f"{m.test.id_accuracy:.2f}%" in card and f"{m.threshold.value:.6g}" in card
        assert f"{m.threshold.val_id_tpr:.4f}" in card and f"{m.test.id_tpr:.4f}" in card
        for o in m.test.ood:
            assert f"| {o.ood_set} | {o.ood_group} | {o.n} | {100 * o.fpr_at_threshold:.2f}% | {o.auroc:.2f} |" in card
        for k in ("p_inv", "sigma", "alpha_max", "lambda" if "lambda" in m.source.config else "lam"):
            assert f"| {k} |" in card
        for k, v in m.scorer.params.items():
            assert f"| {k} | {f'{v:.6g}' if isinstance(v, float) else v} |" in card
        assert m.source.code_version in card


def test_bad_input_is_one_line_and_creates_nothing(run, bundles, tmp_path, capsys):
    def refused(main, argv: list[str], text: str) -> None:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and text in err and err.count("\n") == 1, err

    out = tmp_path / "bundle"
    refused(export_main, [str(tmp_path), "--out", str(out)], "no checkpoint.pt")
    refused(export_main, [str(run), "--out", str(out), "--scorer", "odin", "--onnx"], "needs an input gradient")
    refused(export_main, [str(run), "--out", str(out), "--scorer", "iodin", "--onnx"], "needs an input gradient")
    for tpr in ("1.5", "0", "1"):
        refused(export_main, [str(run), "--out", str(out), "--tpr", tpr], "--tpr: expected a number in (0, 1)")
    refused(export_main, [str(run), "--out", str(out), "--scorer", "knn", "--param", "k=5"], "pass --no-search")
    refused(export_main, [str(run), "--out", str(bundles["energy"])], "already exists")
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))

    other = tmp_path / "other-version"
    shutil.copytree(bundles["energy"], other)
    manifest = json.loads((other / B.MANIFEST).read_text())
    (other / B.MANIFEST).write_text(json.dumps({**manifest, "schema_version": 99}))
    refused(score_main, [str(other), str(tmp_path)], "bundle schema version 99; this ascood reads version 1")
    (other / B.MANIFEST).write_text(json.dumps(manifest))
    (other / B.SCORER_STATE).write_bytes(b"tampered")
    refused(score_main, [str(other), str(tmp_path)], "does not match the manifest's sha256")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("no images here")
    refused(score_main, [str(bundles["energy"]), str(empty)], "a folder with no images")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    refused(score_main, [str(bundles["energy"]), str(broken)], "no readable image among 1 file(s)")
    refused(score_main, [str(bundles["energy"]), str(tmp_path / "missing.png")], "no such file or folder")
    refused(score_main, [str(tmp_path), str(broken)], "no manifest.json")


def test_staging_leaves_nothing_when_the_export_fails(tmp_path):
    dest = tmp_path / "b"
    with pytest.raises(RuntimeError), B.staging(dest) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"half")
        raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_from_a_sweep_takes_the_reports_pick_or_the_best_final_run(finished_sweep, tmp_path, capsys):
    from ascood.cli.sweep import main as sweep_main
    from ascood.export.pick import choose_run
    from ascood.results import SETTING_COLUMNS, read_results, select
    from ascood.sweep.objective import objective_value
    from ascood.verdict import setting_id

    report = tmp_path / "report"
    assert sweep_main(["report", str(finished_sweep), "--out", str(report), "--bootstrap", "200"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    capsys.readouterr()
    choice = choose_run(finished_sweep, BENCHMARK, report=report)
    assert summary["robust_pick_label"] in choice.chosen_by and (choice.run_dir / "checkpoint.pt").is_file()
    cfg = validate_config(json.loads(torch.load(choice.run_dir / "checkpoint.pt", weights_only=True)["config"]))
    picked = "plain CE baseline" if cfg.method == "ce" else setting_id({k: getattr(cfg, k) for k in SETTING_COLUMNS})
    assert picked == summary["robust_pick"]
    rows = read_results(finished_sweep / "results")

    fallback = choose_run(finished_sweep, BENCHMARK, report=tmp_path / "no-report")
    final = select(rows, stage="final", completed=True, final_epoch=True)
    values = {t: objective_value(r, choice.objective) for t, r in final.groupby("trial_id")}
    best = final[final["trial_id"] == max(values, key=values.get)].iloc[0]
    assert "best final run" in fallback.chosen_by
    assert json.loads(torch.load(fallback.run_dir / "checkpoint.pt", weights_only=True)["config"])["seed"] == best["seed"]

    out = tmp_path / "from-sweep"
    assert export_main(["--sweep", str(finished_sweep), "--report", str(report), "--out", str(out), "--device", "cpu"]) == 0
    m = B.read_manifest(out)
    assert m.scorer.name == "energy" and m.source.sweep and summary["robust_pick_label"] in m.source.chosen_by
    assert "chosen as the report's pick" in " ".join(capsys.readouterr().out.split())  # wherever Rich wraps it
