"""The validation-only search (OpenOOD's APS): test data never influences a choice."""

import json
from dataclasses import replace

import torch

from ascood.data import BenchmarkData, OODSet, Split
from ascood.evaluate import Evaluator
from ascood.models import create_model
from ascood.scorers import build_scorers
from ascood.train import make_accelerator


def _split(images, labels=None):
    labels = torch.full((len(images),), -1) if labels is None else labels
    return Split(images, labels)


def _data(seed=0) -> BenchmarkData:
    g = torch.Generator().manual_seed(seed)

    def imgs(n):
        return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)

    train = imgs(60)
    ood_val = OODSet("noise", "far", _split(imgs(30)), _split(imgs(30)))
    return BenchmarkData(
        name="toy", setting="conventional", num_classes=3, mean=(0.5,) * 3, std=(0.25,) * 3,
        train=_split(train, torch.arange(60) % 3), val=_split(imgs(30), torch.arange(30) % 3),
        test=_split(imgs(30), torch.arange(30) % 3), ood=(ood_val,),
    )


def _chosen(data) -> tuple[dict, list]:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3).eval()
    ev = Evaluator(data, make_accelerator(), batch_size=64)
    results, used = ev.evaluate(model, build_scorers(["knn", "gen", "react", "iodin"]), search=True)
    return {s.name: json.dumps(s.params(), sort_keys=True) for s in used}, results


def test_search_ignores_test_data_and_follows_validation_data():
    base = _data()
    chosen, results = _chosen(base)

    g = torch.Generator().manual_seed(9)
    other = torch.randint(0, 256, base.test.images.shape, generator=g, dtype=torch.uint8)
    ood = base.ood[0]
    altered_test = replace(
        base, test=Split(other, base.test.labels),
        ood=(OODSet(ood.name, ood.group, ood.val, Split(other.flip(0), ood.test.labels)),),
    )
    chosen_t, results_t = _chosen(altered_test)
    assert chosen_t == chosen
    assert [s.metrics for s in results_t[0].sets] == [s.metrics for s in results[0].sets]  # val rows unchanged

    # validation OOD that copies ID training images: the search must react to it
    copies = base.train.images[:30]
    altered_val = replace(base, ood=(OODSet(ood.name, ood.group, Split(copies, ood.val.labels), ood.test),))
    chosen_v, _ = _chosen(altered_val)
    assert chosen_v != chosen


def test_an_input_scorers_search_hands_back_the_chosen_points_validation_scores_exactly():
    """`evaluate` takes these instead of scoring the validation sets again: they must be the
    scores a fresh pass at the chosen point gives, bit for bit."""
    data = _data()
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3).eval()
    ev = Evaluator(data, make_accelerator(), batch_size=16)  # several batches per set
    outputs = ev.all_outputs(model, train=True)
    for scorer in build_scorers(["odin", "iodin", "adascale"]):
        chosen, known = ev.fit_with_scores(scorer, model, outputs, search=True)
        assert set(known) == {("val", "id"), ("val", "noise")}
        for key, scores in known.items():
            fresh = ev.score(chosen, model, key, outputs).numpy()
            assert scores.shape == fresh.shape == (30,)
            assert (scores == fresh).all(), (scorer.name, key)
    _, none = ev.fit_with_scores(build_scorers(["knn"])[0], model, outputs, search=True)
    assert none == {}
