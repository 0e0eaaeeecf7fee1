"""Feature scorers against independent computations of their published formulas (NumPy/sklearn)."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.neighbors import NearestNeighbors

from ascood.models import create_model
from ascood.scorers import GEN, KNN, MDS, RMDS, SCORERS, Outputs, ReAct, ViM, build_scorer


def _np(t):
    return t.detach().double().numpy()


def _head_logits(model, h):
    """logits = W·(z(h)·σ) + b, written out in NumPy."""
    z = (h - h.mean(1, keepdims=True)) / (h.std(1, ddof=1, keepdims=True) + 1e-6) * 0.5
    return z @ _np(model.fc.weight).T + _np(model.fc.bias)


def test_gen(setting):
    _, _, test = setting
    p = softmax(_np(test.logits), axis=1)
    top = -np.sort(-p, axis=1)[:, :3]
    expected = -(top**0.5 * (1 - top) ** 0.5).sum(1)
    got = GEN(gamma=0.5, top_m=3).postprocess(test)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("path", ["fc", "head"])
def test_react(setting, path):
    model, train, test = setting
    s = ReAct(percentile=80.0, feature_path=path)
    s.setup(train, model.head)
    c = np.percentile(_np(train.features).ravel(), 80.0)
    clipped = np.minimum(_np(test.features), c)
    logits = _head_logits(model, clipped) if path == "head" else clipped @ _np(model.fc.weight).T + _np(model.fc.bias)
    np.testing.assert_allclose(s.postprocess(test).numpy(), logsumexp(logits, axis=1), rtol=1e-4)


def test_knn(setting):
    _, train, test = setting
    s = KNN(k=5)
    s.setup(train, None)
    bank = _np(train.features)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = _np(test.features)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    dist, _ = NearestNeighbors(n_neighbors=5).fit(bank).kneighbors(q)
    np.testing.assert_allclose(s.postprocess(test).numpy(), -dist[:, -1], rtol=1e-6)


def _mds_reference(train, test):
    h, y = _np(train.features), train.labels.numpy()
    means = np.stack([h[y == c].mean(0) for c in range(4)])
    prec = EmpiricalCovariance(assume_centered=False).fit(h - means[y]).precision_
    q = _np(test.features)
    md = np.stack([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in means], axis=1)
    bg_prec = EmpiricalCovariance(assume_centered=False).fit(h).precision_
    md0 = np.einsum("nd,de,ne->n", q - h.mean(0), bg_prec, q - h.mean(0))
    return md, md0


def test_mds_and_rmds(setting):
    model, train, test = setting
    md, md0 = _mds_reference(train, test)
    mds, rmds = MDS(), RMDS()
    mds.setup(train, model.head)
    rmds.setup(train, model.head)
    np.testing.assert_allclose(mds.postprocess(test).numpy(), (-md).max(1), rtol=1e-3)
    np.testing.assert_allclose(rmds.postprocess(test).numpy(), (-(md - md0[:, None])).max(1), rtol=1e-3, atol=1e-3)


def test_vim(setting):
    model, train, test = setting
    s = ViM(dim=0.5)
    s.setup(train, model.head)
    w, b = _np(model.fc.weight), _np(model.fc.bias)
    u = -np.linalg.pinv(w) @ b

    def centered(h):
        return (h - h.mean(1, keepdims=True)) / (h.std(1, ddof=1, keepdims=True) + 1e-6) * 0.5 - u

    x = centered(_np(train.features))
    vals, vecs = np.linalg.eigh(x.T @ x / len(x))
    ns = vecs[:, np.argsort(vals)[::-1][64:]]
    alpha = _np(train.logits).max(1).mean() / np.linalg.norm(x @ ns, axis=1).mean()
    expected = logsumexp(_np(test.logits), axis=1) - alpha * np.linalg.norm(centered(_np(test.features)) @ ns, axis=1)
    np.testing.assert_allclose(s.postprocess(test).numpy(), expected, rtol=1e-3, atol=1e-3)


def test_feature_scorers_are_oriented_higher_for_id():
    """A toy case with known separation: ID features cluster by class, OOD ones are far away."""
    torch.manual_seed(1)
    model = create_model("small_cnn", num_classes=3, feature_norm="zscore", sigma=1.0).eval()
    centers = torch.randn(3, 128) * 3
    y = torch.arange(300) % 3
    h_train = centers[y] + 0.3 * torch.randn(300, 128)
    with torch.no_grad():
        model.fc.weight.copy_(centers / centers.norm(dim=1, keepdim=True) * 5)
        model.fc.bias.zero_()
        train = Outputs(model.head(h_train), h_train, y)
        h_id = centers[torch.arange(60) % 3] + 0.3 * torch.randn(60, 128)
        h_ood = 3 * torch.randn(60, 128)
        id_out = Outputs(model.head(h_id), h_id, torch.zeros(60))
        ood_out = Outputs(model.head(h_ood), h_ood, torch.zeros(60))
    for name in ("knn", "mds", "rmds", "vim", "react", "ash", "scale", "relation", "nnguide", "gen", "energy", "msp"):
        s = build_scorer(name)
        s.setup(train, model.head)
        assert s.postprocess(id_out).mean() > s.postprocess(ood_out).mean(), name


def test_every_registered_scorer_has_a_valid_grid():
    for name, cls in SCORERS.items():
        for point in cls.grid_points():
            assert set(point) <= set(cls.defaults), name


def _keep_top(h, percentile):
    n = h.shape[1]
    k = n - int(round(n * percentile / 100.0))
    thr = -np.sort(-h, axis=1)[:, k - 1 : k]
    return h >= thr


@pytest.mark.parametrize("path", ["head", "fc"])
def test_ash_and_scale(setting, path):
    model, _, test = setting
    h = _np(test.features)
    keep = _keep_top(h, 80.0)
    pruned = h * keep
    ash_s = pruned * np.exp(h.sum(1, keepdims=True) / pruned.sum(1, keepdims=True))
    ash_b = keep * h.sum(1, keepdims=True) / keep.sum(1, keepdims=True)
    scale_h = h * np.exp(h.sum(1, keepdims=True) / pruned.sum(1, keepdims=True))

    def logits(x):
        return _head_logits(model, x) if path == "head" else x @ _np(model.fc.weight).T + _np(model.fc.bias)

    from ascood.scorers import ASH, SCALE

    for cls, feats, extra in ((ASH, ash_s, {"variant": "s"}), (ASH, ash_b, {}), (ASH, pruned, {"variant": "p"}),
                              (SCALE, scale_h, {})):
        s = cls(percentile=80.0, feature_path=path, **extra)
        s.setup(None, model.head)
        np.testing.assert_allclose(s.postprocess(test).numpy(), logsumexp(logits(feats), axis=1), rtol=1e-4)


def test_nnguide(setting):
    model, train, test = setting
    from ascood.scorers import NNGuide

    s = NNGuide(k=7)
    s.setup(train, model.head)
    bank = _np(train.features)
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True) * logsumexp(_np(train.logits), axis=1)[:, None]
    q = _np(test.features)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    guidance = np.sort(q @ bank.T, axis=1)[:, -7:].mean(1)
    np.testing.assert_allclose(s.postprocess(test).numpy(), logsumexp(_np(test.logits), axis=1) * guidance, rtol=1e-4)


def test_relation(setting):
    model, train, test = setting
    from ascood.scorers import Relation

    s = Relation(power=3, threshold=0.01)
    s.setup(train, model.head)
    zb = _np(train.features)
    zb /= np.linalg.norm(zb, axis=1, keepdims=True)
    zq = _np(test.features)
    zq /= np.linalg.norm(zq, axis=1, keepdims=True)
    r = np.maximum(zq @ zb.T, 0) * (softmax(_np(test.logits), axis=1) @ softmax(_np(train.logits), axis=1).T)
    r[np.abs(r) <= 0.01] = 0
    np.testing.assert_allclose(s.postprocess(test).numpy(), (np.sign(r) * np.abs(r) ** 3).sum(1), rtol=1e-4)


def _bank_setting(n=53, m=41, d=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=torch.float64) * 2, torch.rand(m, d, generator=g, dtype=torch.float64) * 2


@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 1000])
def test_knn_distance_in_query_chunks_equals_the_whole_distance_matrix(chunk):
    from ascood.scorers import functional as Fs

    q, bank = _bank_setting()
    for k in (1, 5, 41, 100):
        full = torch.cdist(Fs.l2_normalize(q), Fs.l2_normalize(bank))
        expected = full.topk(min(k, 41), dim=1, largest=False).values[:, -1]
        torch.testing.assert_close(Fs.knn_distance(q, bank, k, chunk=chunk), expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_top_similarities_in_query_chunks_equal_the_whole_similarity_matrix(chunk):
    from ascood.scorers import functional as Fs

    q, bank = _bank_setting()
    for k in (1, 7, 41, 100):
        expected = (q @ bank.T).topk(min(k, 41), dim=1).values
        torch.testing.assert_close(Fs.top_similarities(q, bank, k, chunk=chunk), expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_mahalanobis_expanded_and_chunked_equals_the_difference_formula(chunk):
    from ascood.scorers import functional as Fs

    h, q = _bank_setting(n=200, m=37, d=10)
    y = torch.arange(200) % 4
    means, precision = Fs.class_gaussians(h, y, 4)
    diff = q[:, None, :] - means[None, :, :]
    expected = torch.einsum("ncd,de,nce->nc", diff, precision, diff)
    got = Fs.mahalanobis(q, means, precision, chunk=chunk)
    assert got.dtype == torch.float64 and got.shape == (37, 4)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)
    lopsided = torch.randn(10, 10, dtype=torch.float64)  # the expansion does not assume P symmetric
    torch.testing.assert_close(
        Fs.mahalanobis(q, means, lopsided, chunk=chunk), torch.einsum("ncd,de,nce->nc", diff, lopsided, diff),
        rtol=1e-9, atol=1e-9,
    )


@pytest.mark.parametrize("name", ["knn", "nnguide", "mds", "rmds"])
def test_bank_scorers_are_unchanged_by_tiny_chunks(setting, monkeypatch, name):
    from ascood.scorers import functional as Fs

    model, train, test = setting
    whole = build_scorer(name)
    whole.setup(train, model.head)
    expected = whole.postprocess(test)
    monkeypatch.setattr(Fs, "CHUNK_ELEMENTS", 100)  # a few queries per chunk
    chunked = build_scorer(name)
    chunked.setup(train, model.head)
    torch.testing.assert_close(chunked.postprocess(test), expected, rtol=1e-6, atol=0)


def _pointwise(cls, train, head, sets, points):
    out = []
    for pt in points:
        s = cls(**pt)
        s.setup(train, head)
        out.append([s.postprocess(o) for o in sets])
    return out


def test_knn_grid_scores_equal_a_scorer_per_point_exactly(setting):
    from ascood.scorers import Scorer

    _, train, test = setting
    sets = [test, Outputs(train.logits[:30], train.features[:30] * 2, train.labels[:30])]
    points = [*KNN.grid_points(), {"k": 1}, {"k": 7}, {"k": 80}, {"k": 81}]  # the bank has 80
    got = KNN(k=3).grid_scores(train, None, sets, points)
    default = Scorer.grid_scores(KNN(k=3), train, None, sets, points)
    expected = _pointwise(KNN, train, None, sets, points)
    assert len(got) == len(points) and all(len(g) == len(sets) for g in got)
    for g, d, e in zip(got, default, expected, strict=True):
        for a, b, c in zip(g, d, e, strict=True):
            assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("cls", [ReAct, GEN])
def test_default_grid_scores_set_a_scorer_up_per_point(setting, cls):
    model, train, test = setting
    sets = [test, train]
    points = cls.grid_points()
    got = cls().grid_scores(train, model.head, sets, points)
    expected = _pointwise(cls, train, model.head, sets, points)
    for g, e in zip(got, expected, strict=True):
        assert len(g) == len(sets)
        for a, b in zip(g, e, strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown parameter"):
        cls().grid_scores(train, model.head, sets, [{"nope": 1}])
