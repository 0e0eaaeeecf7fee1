"""Every reader of a dataset's own layout finds what torchvision's reader finds on the same tree
(count and labels), including trees assembled from symlinked folders."""

import os
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

from ascood.data import fixtures
from ascood.data.sources import list_images, read_aircraft, read_cars, read_cifar, read_class_folders, read_ood_folder


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def _symlinked_tree(tmp_path: Path) -> Path:
    """An OOD set as people build SSB-hard or NINCO subsets: one real class folder, one linked in,
    and a nested linked folder inside the real one."""
    for i in range(2):
        _png(tmp_path / "pool" / "b" / f"{i}.png", i)
        _png(tmp_path / "pool" / "c" / f"{i}.png", 10 + i)
        _png(tmp_path / "ood" / "a" / f"{i}.png", 20 + i)
    os.symlink(tmp_path / "pool" / "b", tmp_path / "ood" / "b", target_is_directory=True)
    os.symlink(tmp_path / "pool" / "c", tmp_path / "ood" / "a" / "more", target_is_directory=True)
    return tmp_path / "ood"


def test_symlinked_class_folders_are_read_like_image_folder(tmp_path):
    root = _symlinked_tree(tmp_path)
    reference = torchvision.datasets.ImageFolder(str(root))
    assert len(read_ood_folder(root)) == len(reference) == 6
    records, classes = read_class_folders(root)
    assert classes == reference.classes
    assert sorted(zip(map(os.path.realpath, records.paths), records.labels.tolist(), strict=True)) == \
        sorted((os.path.realpath(p), y) for p, y in reference.samples)


def test_a_symlink_cycle_is_walked_once(tmp_path):
    root = _symlinked_tree(tmp_path)
    os.symlink(root, tmp_path / "pool" / "b" / "loop", target_is_directory=True)
    files = list_images(root)
    assert len(files) == len({os.path.realpath(f) for f in files}) == 6, "every image once, the cycle not followed"


def test_cifar_reader_agrees_with_torchvision(tmp_path, monkeypatch):
    for which, cls, files, key in (("cifar10", torchvision.datasets.CIFAR10, ["test_batch"], "labels"),
                                   ("cifar100", torchvision.datasets.CIFAR100, ["test"], "fine_labels")):
        fixtures.write_cifar(tmp_path, which)
        directory = tmp_path / ("cifar-10-batches-py" if which == "cifar10" else "cifar-100-python")
        ours = read_cifar(directory, files, key)
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)  # fixture batches: no published md5
        monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
        ref = cls(str(tmp_path), train=False, download=False)
        assert len(ours) == len(ref)
        assert ours.labels.tolist() == list(ref.targets)
        assert np.array_equal(ours.pixels.transpose(0, 2, 3, 1), ref.data)


def test_aircraft_reader_agrees_with_torchvision(tmp_path):
    fixtures.write_aircraft(tmp_path)
    ours = read_aircraft(tmp_path / "fgvc-aircraft-2013b")
    for split in ("trainval", "test"):
        ref = torchvision.datasets.FGVCAircraft(str(tmp_path), split=split, annotation_level="variant")
        assert len(ours[split]) == len(ref)
        assert ours[split].labels.tolist() == list(ref._labels)
        assert [Path(p).name for p in ours[split].paths] == [Path(p).name for p in ref._image_files]


def test_cars_reader_agrees_with_torchvision(tmp_path):
    fixtures.write_cars(tmp_path)
    ours = read_cars(tmp_path / "stanford_cars")
    for split in ("train", "test"):
        ref = torchvision.datasets.StanfordCars(str(tmp_path), split=split)
        assert len(ours[split]) == len(ref)
        assert sorted(zip((Path(p).name for p in ours[split].paths), ours[split].labels.tolist(), strict=True)) == \
            sorted((Path(p).name, y) for p, y in ref._samples)


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_image_folder_layouts_agree(tmp_path, layout):
    for c in ("x", "y", "z"):
        for i in range(3):
            sub = "" if layout == "flat" else f"part{i % 2}/"
            _png(tmp_path / "t" / c / f"{sub}{i}.png", i)
    (tmp_path / "t" / "x" / "notes.txt").write_text("not an image")
    ref = torchvision.datasets.ImageFolder(str(tmp_path / "t"))
    records, classes = read_class_folders(tmp_path / "t")
    assert classes == ref.classes and len(records) == len(ref)
    assert sorted(zip(records.paths, records.labels.tolist(), strict=True)) == sorted(ref.samples)
