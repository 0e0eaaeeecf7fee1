"""The scorers' device rule (`ascood.scorers.base`): state fitted on the CPU, copies of the head,
never the live head, which lives on the accelerator in real use (here: moved to `meta`)."""

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn

from ascood.models.head import NormalizedLinear
from ascood.scorers import SCORERS, Outputs

FEATURE_SCORERS = [name for name, cls in SCORERS.items() if not cls.needs_input]
CASES = [(name, {}) for name in FEATURE_SCORERS] + [  # and the feature path other than the default
    (name, {"feature_path": "fc" if SCORERS[name].defaults["feature_path"] == "head" else "head"})
    for name in FEATURE_SCORERS if "feature_path" in SCORERS[name].defaults
]
INPUT_SCORERS = [name for name, cls in SCORERS.items() if cls.needs_input]
IDS = [name + "".join(f"-{v}" for v in params.values()) for name, params in CASES]


def _outputs(n: int, d: int = 32, c: int = 5) -> Outputs:
    """Random outputs with post-ReLU-like features (≥ 0) and every class present."""
    return Outputs(torch.randn(n, c) * 2, torch.rand(n, d) * 3, torch.arange(n) % c)


@pytest.fixture
def setting():
    torch.manual_seed(0)
    head = NormalizedLinear(32, 5, "zscore", 0.5)
    return head, _outputs(300), _outputs(70)


def _held(obj):
    """Every module and tensor an object's state reaches (through dicts, sequences, dataclasses)."""
    if isinstance(obj, (nn.Module, Tensor)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _held(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _held(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _held(getattr(obj, f.name))


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_scores_do_not_depend_on_where_the_head_lives_after_setup(setting, name, params):
    head, train, test = setting
    untouched = copy.deepcopy(head)
    a = SCORERS[name](**params)
    a.setup(train, head)
    head.to("meta")
    b = SCORERS[name](**params)
    b.setup(train, untouched)
    got, expected = a.postprocess(test), b.postprocess(test)
    assert got.device.type == "cpu"
    assert torch.equal(got, expected), name


@pytest.mark.parametrize("name", FEATURE_SCORERS)
def test_a_scorer_holds_no_reference_to_the_head_after_setup(setting, name):
    head, train, _ = setting
    live = {p.untyped_storage().data_ptr() for p in head.parameters()}
    s = SCORERS[name]()
    s.setup(train, head)
    head.to("meta")
    for x in _held(vars(s)):
        assert not isinstance(x, nn.Module), name
        assert x.device.type == "cpu", name
        assert not x.requires_grad, name
        assert x.untyped_storage().data_ptr() not in live, f"{name} shares storage with the head's parameters"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_a_head_on_the_gpu_scores_cpu_outputs_as_on_the_cpu(setting, name, params):
    head, train, test = setting
    gpu = copy.deepcopy(head).cuda()
    a, b = SCORERS[name](**params), SCORERS[name](**params)
    a.setup(train, gpu)
    b.setup(train, head)
    assert torch.equal(a.postprocess(test), b.postprocess(test)), name


def _input_setting(device: str):
    from ascood.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, feature_norm="zscore", sigma=0.5).eval()
    x_ref, x = torch.randn(24, 3, 32, 32), torch.randn(10, 3, 32, 32)
    return model.to(device), x_ref.to(device), x.to(device), torch.tensor([0.3, 0.3, 0.3], device=device)


def _ready(name: str, net: nn.Module, head: nn.Module, x_ref: Tensor, std: Tensor):
    """An input scorer set up as the evaluator does, plus its ID reference where it takes one."""
    s = SCORERS[name]()
    s.setup(None, head)
    if hasattr(s, "fit_reference"):
        s.fit_reference(net, x_ref.split(8), std)
    return s


@pytest.mark.parametrize("name", INPUT_SCORERS)
def test_an_input_scorer_keeps_its_state_on_the_cpu_and_no_reference_to_the_model(name):
    model, x_ref, x, std = _input_setting("cpu")
    live = {p.untyped_storage().data_ptr() for p in model.parameters()}
    s = _ready(name, model, model.head, x_ref, std)
    assert s.postprocess_batch(model, x, std).device == x.device
    for t in _held(vars(s)):
        assert not isinstance(t, nn.Module), name
        assert t.device.type == "cpu" and not t.requires_grad, name
        assert t.untyped_storage().data_ptr() not in live, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", INPUT_SCORERS)
def test_an_input_scorer_scores_on_the_device_of_its_input(name):
    from ascood.evaluate import Fp32Logits, frozen, no_tf32

    cpu, gpu = _input_setting("cpu"), _input_setting("cuda")
    scores = []
    for model, x_ref, x, std in (cpu, gpu):
        with frozen(model), no_tf32():
            s = _ready(name, Fp32Logits(model), model.head, x_ref, std)
            scores.append(s.postprocess_batch(Fp32Logits(model), x, std))
        for t in _held(vars(s)):
            assert t.device.type == "cpu", name
    assert scores[1].device.type == "cuda"
    close = torch.isclose(scores[1].cpu(), scores[0], rtol=1e-3, atol=1e-4)
    assert close.float().mean() >= 0.9, (name, scores)  # a flipped near-tie in |∇| may move one sample
