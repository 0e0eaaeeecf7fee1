import torch
import torch.nn.functional as F

from ascood.models import create_model
from ascood.scorers import IODIN, MSP, ODIN, Energy, MaxLogit, Outputs


def test_logit_scorers_match_their_formulas():
    torch.manual_seed(0)
    logits = torch.randn(20, 6, dtype=torch.float64) * 3
    out = Outputs(logits, torch.zeros(20, 4), torch.zeros(20, dtype=torch.long))
    p = logits.exp() / logits.exp().sum(1, keepdim=True)
    torch.testing.assert_close(MSP().postprocess(out), p.max(1).values)
    torch.testing.assert_close(MaxLogit().postprocess(out), logits.max(1).values)
    torch.testing.assert_close(Energy().postprocess(out), torch.log(logits.exp().sum(1)))


def test_scores_are_oriented_higher_for_id():
    confident = torch.tensor([[9.0, 0.0, 0.0]])
    flat = torch.tensor([[0.1, 0.0, 0.05]])
    for scorer in (MSP(), MaxLogit(), Energy()):
        s = [scorer.postprocess(Outputs(z, z, torch.zeros(1))) for z in (confident, flat)]
        assert s[0] > s[1]


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=4).eval()


def _perturbed_input(scorer, model, x, std):
    """Recover x̃ by recording the input of the scorer's second forward pass."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    scores = scorer.postprocess_batch(model, x, std)
    handle.remove()
    return seen[-1], scores


def test_odin_matches_an_independent_computation():
    model, x = _model(), torch.randn(5, 3, 32, 32)
    std = torch.tensor([0.2, 0.3, 0.4])
    T, eps = 1000.0, 0.0014
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    F.cross_entropy(logits / T, logits.argmax(1)).backward()
    sign = (xr.grad >= 0).float() * 2 - 1
    x_tilde = x - eps * sign / std.view(1, 3, 1, 1)
    expected = (model(x_tilde) / T).softmax(1).max(1).values
    seen, scores = _perturbed_input(ODIN(temperature=T, epsilon=eps), model, x, std)
    torch.testing.assert_close(seen, x_tilde)
    torch.testing.assert_close(scores, expected.detach())
    assert ((seen - x) != 0).flatten(1).sum(1).tolist() == [3 * 32 * 32] * 5


def test_iodin_perturbs_exactly_k_entries_per_image_at_the_largest_gradient():
    model, x = _model(), torch.randn(4, 3, 32, 32)
    std = torch.tensor([0.5, 0.5, 0.5])
    for k in (1, 3, 10):
        seen, _ = _perturbed_input(IODIN(temperature=1000.0, epsilon=0.01, k=k), model, x, std)
        changed = (seen - x) != 0
        assert changed.flatten(1).sum(1).tolist() == [k] * 4
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    F.cross_entropy(logits / 1000.0, logits.argmax(1), reduction="sum").backward()
    seen, _ = _perturbed_input(IODIN(temperature=1000.0, epsilon=0.01, k=1), model, x, std)
    moved = ((seen - x) != 0).flatten(1).float().argmax(1)
    assert torch.equal(moved, xr.grad.abs().flatten(1).argmax(1))


def test_odin_grid_shares_work_but_equals_pointwise_scores():
    model, x = _model(), torch.randn(6, 3, 32, 32)
    std = torch.tensor([0.3, 0.3, 0.3])
    for cls in (ODIN, IODIN):
        points = cls.grid_points()
        assert len(points) == 28
        grid = cls().postprocess_grid(model, x, std, points)
        for pt, scores in zip(points, grid, strict=True):
            torch.testing.assert_close(scores, cls(**pt).postprocess_batch(model, x, std))
