"""The real benchmarks' loaders on fixtures written in every supported on-disk layout."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ascood.data import fixtures
from ascood.data.augment import center_crop, random_crop_flip, random_resized_crop
from ascood.data.decode import CorruptImageError, decode_files, decode_image
from ascood.data.loading import Preprocess
from ascood.data.real import definitions, inventory, mixoe_classes, resolve_params
from ascood.data.registry import DatasetError, DatasetNotFound, UnknownBenchmarkError, load_benchmark

REAL = list(definitions())
VENV_BIN = Path(sys.executable).parent


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


def _tree(tmp_path: Path, name: str, layout: str) -> Path:
    root = tmp_path / f"{name}-{layout}"
    (fixtures.write_native if layout == "native" else fixtures.write_openood)(root, name)
    return root


# Expected (train, val, test) ID sizes of the fixtures, per layout.
NATIVE_SIZES = {
    "waterbirds": (80, 16, 16),  # metadata.csv split column as is
    "celeba": None,  # checked by its own test
    "cars": (150 * 2, 150, 150 * 2),  # 3 train images per class: 1 held out for val
    "aircraft": (90 * 2, 90, 90 * 2),
    "cifar10": (150, 10, 50),  # val: a fixed 10% of each class of the test batch
    "cifar100": (300, 100, 500),
    "imagenet100": (200, 100, 100),
}


@pytest.mark.parametrize("layout", ["openood", "native"])
@pytest.mark.parametrize("name", REAL)
def test_each_layout_loads_with_counts_labels_and_disjoint_parts(tmp_path, name, layout):
    root = _tree(tmp_path, name, layout)
    defn = definitions()[name]
    d = load_benchmark(f"{name}[size=32]", root=root)
    sizes = (len(d.train), len(d.val), len(d.test))
    if layout == "openood":
        assert sizes == (2 * defn.classes,) * 3
    elif NATIVE_SIZES[name] is not None:
        assert sizes == NATIVE_SIZES[name]
    assert (d.num_classes, d.setting) == (defn.classes, defn.setting)
    for split in (d.train, d.val, d.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1] == 3
        assert split.labels.min() >= 0 and split.labels.max() < defn.classes
    if layout == "openood" or name in ("cifar10", "cifar100", "imagenet100"):
        assert set(d.train.labels.tolist()) == set(range(defn.classes))
    assert [o.name for o in d.ood] == [o.name for o in defn.ood]
    assert {o.group for o in d.ood} == {o.group for o in defn.ood}
    assert any(len(o.val) for o in d.ood), "a validation OOD half exists"
    id_hashes = [_hashes(s.images) for s in (d.train, d.val, d.test)]
    assert not (id_hashes[0] & id_hashes[1] or id_hashes[0] & id_hashes[2] or id_hashes[1] & id_hashes[2])
    every_id = set().union(*id_hashes)
    test_ood = set()
    for o in d.ood:
        assert len(o.test) > 0 and (o.test.labels == -1).all() and (o.val.labels == -1).all()
        assert not (_hashes(o.test.images) & every_id)
        test_ood |= _hashes(o.test.images)
    for o in d.ood:
        assert not (_hashes(o.val.images) & (test_ood | every_id)), f"{o.name}: val OOD overlaps a test set or ID"
    g = d.geometry
    assert g.size == 32 and g.flip and g.train == ("random" if name.startswith("cifar") else "resized")


def test_mixoe_class_choice_reproduces_aircraft_split_0_and_relabels_sorted(tmp_path):
    id_classes, held_out = mixoe_classes(100, 90, 0)
    assert held_out.tolist() == [9, 21, 36, 44, 47, 64, 67, 83, 87, 96]
    root = _tree(tmp_path, "aircraft", "native")
    inv = inventory(definitions()["aircraft"], root, resolve_params(definitions()["aircraft"], {}))
    parts = {p.name: p.records for p in inv.parts}
    listed = dict(ln.split(" ", 1) for ln in (root / "fgvc-aircraft-2013b/data/images_variant_test.txt").read_text().splitlines())
    variant = {f"{k}.jpg": int(v.split()[-1]) for k, v in listed.items()}
    ood_variants = {variant[Path(p).name] for p in parts["ood/aircraft_ood/test"].paths}
    assert ood_variants == set(held_out.tolist())
    test = parts["id/test"]
    assert [variant[Path(p).name] for p in test.paths] == [int(id_classes[y]) for y in test.labels]
    other = mixoe_classes(100, 90, 1)[1]
    assert set(other.tolist()) != set(held_out.tolist())
    d1 = load_benchmark("aircraft[split=1,size=32]", root=root)
    assert d1.name == "aircraft[split=1,size=32]" and len(d1.ood[0].test) == 20


def test_waterbirds_correlation_r_subsamples_the_majority_side(tmp_path):
    root = _tree(tmp_path, "waterbirds", "native")
    defn = definitions()["waterbirds"]
    inv = inventory(defn, root, resolve_params(defn, {"r": "0.8"}))
    train = next(p.records for p in inv.parts if p.name == "id/train")
    y, place = train.labels, train.attrs["place"]
    for c in (0, 1):
        assert ((y == c) & (place == c)).sum() / (y == c).sum() == pytest.approx(0.8)
        assert ((y == c) & (place != c)).sum() == 4, "the minority side is never subsampled"
    val = next(p.records for p in inv.parts if p.name == "id/val")
    assert ((val.labels == val.attrs["place"]).mean()) == pytest.approx(0.5)


def test_celeba_construction_from_attribute_and_partition_files(tmp_path):
    root = _tree(tmp_path, "celeba", "native")
    defn = definitions()["celeba"]
    from ascood.data.sources import read_celeba

    paths, attrs, partition = read_celeba(root / "celeba")
    inv = inventory(defn, root, resolve_params(defn, {"r": "0.6"}))
    parts = {p.name: p.records for p in inv.parts}
    index = {p: i for i, p in enumerate(paths)}
    train = [index[p] for p in parts["id/train"].paths]
    grey, male = attrs["Gray_Hair"][train], attrs["Male"][train]
    bald_men = set(np.flatnonzero((attrs["Male"] == 1) & (attrs["Bald"] == 1)).tolist())
    n_grey_women = int(((attrs["Gray_Hair"] == 1) & (attrs["Male"] == 0) & (partition == 0)).sum())
    assert ((grey == 1) & (male == 0)).sum() == n_grey_women
    expected_major = round(0.6 / 0.4 * n_grey_women)
    not_bald_man = ~((attrs["Male"] == 1) & (attrs["Bald"] == 1))
    for g, m in ((1, 1), (0, 0)):
        available = int(((attrs["Gray_Hair"] == g) & (attrs["Male"] == m) & (partition == 0) & not_bald_man).sum())
        assert ((grey == g) & (male == m)).sum() == min(expected_major, available)
    ood = [index[p] for p in parts["ood/celeba_ood/test"].paths + parts["ood/celeba_ood/val"].paths]
    assert set(ood) == bald_men
    assert not (set(train) | {index[p] for p in parts["id/val"].paths + parts["id/test"].paths}) & bald_men
    assert (partition[[index[p] for p in parts["ood/celeba_ood/val"].paths]] == 1).all()


def test_geometry_matches_the_reference_test_transform(tmp_path):
    """Stored Resize(256)+centre square, then the 224 centre crop = torchvision Resize(256) +
    CenterCrop(224) of the image."""
    from torchvision import transforms

    path = tmp_path / "x.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 411, 3), dtype=np.uint8)).save(path)
    stored = torch.from_numpy(decode_image(path, 256))
    ours = center_crop(stored[None], 224)[0]
    ref = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()])(
        Image.open(path).convert("RGB"))
    assert torch.equal(ours, ref)


def test_batch_augmentations_are_crops_and_flips_of_each_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    out = random_crop_flip(images, 12, padding=4, flip=True, generator=g)
    padded = F.pad(images, (4, 4, 4, 4))
    for i in range(8):
        windows = [padded[i, :, t : t + 12, c : c + 12] for t in range(9) for c in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    same = random_resized_crop(images, 6, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, generator=g)
    ref = F.interpolate(images.float(), size=(6, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(same, ref, atol=1e-3)
    a = random_resized_crop(images, 6, generator=torch.Generator().manual_seed(3))
    b = random_resized_crop(images, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (8, 3, 6, 6)


def test_preprocess_eval_crops_the_centre_and_train_draws_crops(tmp_path):
    root = _tree(tmp_path, "cifar10", "openood")
    d = load_benchmark("cifar10", root=root)
    pre = Preprocess(d)
    batch = d.test.images[:4]
    x = pre.eval(batch)
    assert x.shape == (4, 3, 32, 32)
    t1 = pre.train(batch, torch.Generator().manual_seed(0))
    t2 = pre.train(batch, torch.Generator().manual_seed(0))
    assert torch.equal(t1, t2) and not torch.equal(t1, x)


def test_decoded_cache_is_reused_and_follows_file_changes(tmp_path):
    files = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((10, 14, 3), i * 40, dtype=np.uint8)).save(p)
        files.append(p)
    store = tmp_path / "cache"
    first = decode_files(files, 8, store, workers=1)
    npys = sorted(store.glob("*.npy"))
    stamp = npys[0].stat().st_mtime_ns
    again = decode_files(files, 8, store, workers=1)
    assert torch.equal(first.images, again.images) and sorted(store.glob("*.npy")) == npys
    assert npys[0].stat().st_mtime_ns == stamp
    assert first.images[3].float().mean() == pytest.approx(120, abs=1)
    Image.fromarray(np.full((10, 14, 3), 7, dtype=np.uint8)).save(files[3])
    os.utime(files[3], ns=(stamp + 10**9, stamp + 10**9))
    changed = decode_files(files, 8, store, workers=1)
    assert changed.images[3].float().mean() == pytest.approx(7, abs=1) and len(list(store.glob("*.npy"))) == 2
    files[1].write_bytes(b"broken")
    with pytest.raises(CorruptImageError, match=str(files[1])):
        decode_files(files, 8, store, workers=2)
    skipped = decode_files(files, 8, store, skip_corrupt=True, workers=2)
    assert skipped.kept.tolist() == [0, 2, 3, 4] and len(skipped.images) == 4
    assert skipped.skipped[0][0] == str(files[1])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: _append(r / "benchmark_imglist/cifar10/train_cifar10.txt", "just-a-path-without-label"),
         r"train_cifar10.txt:21: expected 'relative/path label'"),
        (lambda r: _append(r / "benchmark_imglist/cifar10/train_cifar10.txt", "cifar10/train/0/0.jpg 10"),
         r"label 10 out of range 0…9"),
        (lambda r: _append(r / "benchmark_imglist/cifar10/test_mnist.txt", "mnist/test/0.png 3"),
         r"an OOD list holds ID labels"),
        (lambda r: _append(r / "benchmark_imglist/cifar10/test_svhn.txt", "cifar10/test/1/0.jpg -1"),
         r"id/test and ood/svhn/test share 1 image"),
        (lambda r: _append(r / "benchmark_imglist/cifar10/val_tin.txt", "svhn/test/0.png -1"),
         r"ood/tin/val and ood/svhn/test share 1 image"),
    ],
)
def test_bad_lists_are_one_line_errors_exit_2(tmp_path, mutate, message):
    root = _tree(tmp_path, "cifar10", "openood")
    mutate(root)
    with pytest.raises(DatasetError, match=message):
        load_benchmark("cifar10", root=root)
    r = subprocess.run([str(VENV_BIN / "ascood-train"), "--benchmark", "cifar10", "--data-root", str(root),
                        "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "ascood-train: error:" in r.stderr


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


def test_missing_data_and_bad_parameters_say_where_and_what(tmp_path):
    with pytest.raises(DatasetNotFound, match=f"dataset cars not found at {tmp_path}.*stanford_cars"):
        load_benchmark("cars", root=tmp_path)
    with pytest.raises(UnknownBenchmarkError, match=r"aircraft\[split=…\]: expected a whole number"):
        load_benchmark("aircraft[split=x]", root=tmp_path)
    with pytest.raises(UnknownBenchmarkError, match="unknown parameter 'q'"):
        load_benchmark("cars[q=1]", root=tmp_path)
    with pytest.raises(UnknownBenchmarkError, match="takes no parameters"):
        load_benchmark("mnist10[size=3]")
    root = _tree(tmp_path, "aircraft", "openood")
    with pytest.raises(DatasetError, match="the OpenOOD image lists fix split"):
        load_benchmark("aircraft[split=2]", root=root)


def test_without_leaves_ood_sets_out_and_says_so_in_the_name(tmp_path):
    root = tmp_path / "data"
    fixtures.write_openood(root, "cifar10")
    shutil.rmtree(root / "images_classic" / "svhn")
    (root / "benchmark_imglist/cifar10/test_mnist.txt").unlink()
    with pytest.raises(DatasetError, match="ood/mnist/test: not found"):
        load_benchmark("cifar10", root=root)
    d = load_benchmark("cifar10[without=mnist+svhn]", root=root)
    assert d.name == "cifar10[without=mnist+svhn]"
    assert [o.name for o in d.ood] == ["cifar100", "tin", "texture", "places365"]
    with pytest.raises(UnknownBenchmarkError, match="expected OOD set names"):
        load_benchmark("cifar10[without=nope]", root=root)
    with pytest.raises(UnknownBenchmarkError, match="leaves no validation OOD set"):
        load_benchmark("cifar10[without=tin]", root=root)


def test_an_ood_set_read_from_another_datasets_folder_is_required(tmp_path):
    root = tmp_path / "data"
    fixtures.write_cifar(root, "cifar10")
    fixtures.write_ood_folders(root, definitions()["cifar10"])
    with pytest.raises(DatasetNotFound, match=f"ood/cifar100/test: not found at {root / 'cifar-100-python'}"):
        load_benchmark("cifar10", root=root)


def test_ascood_data_check_reports_a_missing_split_and_a_corrupt_image(tmp_path):
    root = tmp_path / "data"
    fixtures.write_native(root, "waterbirds")
    fixtures.write_openood(root, "cifar10")
    (root / "benchmark_imglist/cifar10/val_cifar10.txt").unlink()
    bad = root / "ood/ninco/class0/ninco_0.jpg"
    bad.write_bytes(b"not an image")
    env = {**os.environ, "COLUMNS": "250"}
    r = subprocess.run([str(VENV_BIN / "ascood-data"), "check", str(root), "waterbirds", "cifar10"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert "id/val │ missing" in out and "val_cifar10.txt" in out
    assert "1 unreadable image(s)" in out and "ninco_0.jpg" in out
    assert "incomplete: waterbirds, cifar10" in out
    ok = subprocess.run([str(VENV_BIN / "ascood-data"), "check", str(root), "cifar100"],
                        capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 1 and "not found" in ok.stdout
    fixtures.write_openood(root, "cifar100")
    ok = subprocess.run([str(VENV_BIN / "ascood-data"), "check", str(root), "cifar100"],
                        capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0 and "all complete" in ok.stdout
    usage = subprocess.run([str(VENV_BIN / "ascood-data"), "check", str(root), "mnist10"], capture_output=True, text=True)
    assert usage.returncode == 2 and "embedded benchmark needs no data" in usage.stderr


def test_train_and_eval_commands_on_a_real_layout(tmp_path):
    """ascood-train and ascood-eval find a real benchmark through --data-root, and evaluation
    reproduces the training run's test metrics from the same data."""
    import pandas as pd

    root = _tree(tmp_path, "cifar10", "native")
    run = tmp_path / "run"
    train = subprocess.run([str(VENV_BIN / "ascood-train"), "--benchmark", "cifar10", "--data-root", str(root),
                            "--out", str(run), "--epochs", "1", "--backbone", "small_cnn", "--batch-size", "32",
                            "--scorers", "msp,energy", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    evaluated = subprocess.run([str(VENV_BIN / "ascood-eval"), str(run), "--data-root", str(root), "--no-search",
                                "--scorers", "msp,energy"], capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    key = ["split", "ood_set", "scorer"]
    trained = pd.read_parquet(run / "results.parquet").query("split == 'test'").set_index(key)["auroc"]
    again = pd.read_parquet(run / "eval.parquet").query("split == 'test'").set_index(key)["auroc"]
    assert set(trained.index.get_level_values("ood_set")) == {o.name for o in definitions()["cifar10"].ood}
    pd.testing.assert_series_equal(trained.sort_index(), again.sort_index(), check_exact=False, atol=1e-9)
