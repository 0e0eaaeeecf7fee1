"""Folding BatchNorm into the convolutions for input-gradient passes: the same map, faster."""

import pytest
import torch
from torch import nn

from ascood.models import create_model
from ascood.models.fold import fold_batchnorm


def _trained_stats(model: nn.Module) -> nn.Module:
    """Running statistics far from the identity, so that a fold that dropped them would show."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18_32x32", "resnet18"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_backbone_computes_the_same_features_and_input_gradients(backbone, channels_last):
    torch.manual_seed(0)
    model = _trained_stats(create_model(backbone, num_classes=4))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    folded = fold_batchnorm(model.backbone)
    assert folded is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(6, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ha, hb = model.backbone(xa), folded(xb)
    torch.testing.assert_close(hb, ha, rtol=1e-4, atol=1e-5)
    (ga,) = torch.autograd.grad(ha.square().sum(), xa)
    (gb,) = torch.autograd.grad(hb.square().sum(), xb)
    torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-5)
    # the model itself is left as it was
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())


def test_no_fold_in_training_mode_or_without_batchnorm_or_when_untraceable():
    model = create_model("small_cnn", num_classes=3)
    assert fold_batchnorm(model.backbone.train()) is None
    assert fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()) is None

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent: fx cannot trace it

    assert fold_batchnorm(Branchy().eval()) is None


def test_one_evaluation_folds_the_backbone_once_and_only_when_an_input_scorer_runs(monkeypatch):
    from test_search import _data

    import ascood.evaluate as E
    from ascood.evaluate import Evaluator
    from ascood.scorers import build_scorers
    from ascood.train import make_accelerator

    built = []
    real = E.fold_batchnorm
    monkeypatch.setattr(E, "fold_batchnorm", lambda backbone: built.append(1) or real(backbone))
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3).eval()
    ev = Evaluator(_data(), make_accelerator(), batch_size=16)
    ev.evaluate(model, build_scorers(["msp", "energy"]), search=True)
    assert built == []
    ev.evaluate(model, build_scorers(["odin", "iodin", "adascale"]), search=True)  # 2 splits × 2 sets each
    assert built == [1]
    ev.evaluate(model, build_scorers(["odin"]), search=False)  # a new evaluation builds its own
    assert built == [1, 1]
