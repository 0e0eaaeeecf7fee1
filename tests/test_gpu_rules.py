"""Device, precision and memory rules that a GPU would show, checked where a CPU can show them."""

import gc
import weakref

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import HOST_OPS, recorded_ops

from ascood.config import validate_config
from ascood.data import load_benchmark
from ascood.data.augment import random_resized_crop
from ascood.data.loading import Normalizer
from ascood.evaluate import Evaluator, Fp32Logits, grad_chunk
from ascood.method.synthesis import synthesize_scaled
from ascood.models import create_model
from ascood.models.pool import GlobalAvgPool
from ascood.scorers import IODIN, ODIN
from ascood.sweep.errors import SweepSetupError
from ascood.sweep.preflight import check_precision
from ascood.sweep.spec import SweepSpec
from ascood.sweep.trainable import TrialMeta, hide_gpus_unless_asked, use_gpu
from ascood.train import DeviceUnavailable, make_accelerator, release, save_checkpoint, train_step
from ascood.trial import run_trial

SMALL = "cmnist[classes=2]"


def _meta(gpus: float) -> TrialMeta:
    return TrialMeta(sweep="s", out="/tmp/x", benchmark=SMALL, stage="search", defaults={}, objective={},
                     processes=1, cpus_per_process=1, gpus_per_process=gpus, max_failures=0)


# ---- which device a run uses --------------------------------------------------------------------


def test_a_trial_runs_where_it_asked_ray_to_not_where_a_gpu_is_visible(monkeypatch):
    assert not use_gpu(_meta(0)) and use_gpu(_meta(0.5)) and use_gpu(_meta(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as Ray 2.60 shows it to a CPU trial
    assert make_accelerator(use_gpu=False).device.type == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    hide_gpus_unless_asked(_meta(0))
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    hide_gpus_unless_asked(_meta(1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_gpu_that_is_not_there_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceUnavailable, match="asks for a GPU and this process sees none"):
        make_accelerator(use_gpu=True)


def test_bf16_refused_before_the_sweep_on_a_gpu_without_it(tmp_path):
    spec = SweepSpec.model_validate({"name": "p", "output": str(tmp_path), "datasets": [{"benchmark": SMALL}],
                                     "space": {"alpha": {"low": 0.1, "high": 1.0}}, "resources": {"gpus_per_process": 1}})
    with pytest.raises(SweepSetupError, match="bf16 is not supported by this machine's GPU"):
        check_precision(spec, SMALL, "bf16", gpu_bf16=False)
    check_precision(spec, SMALL, "bf16", gpu_bf16=True)
    check_precision(spec, SMALL, "fp16", gpu_bf16=False)
    cpu = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus_per_process": 0})})
    check_precision(cpu, SMALL, "bf16", gpu_bf16=False)  # CPU trials: bf16 autocast on the CPU


# ---- precision: every scorer through the same fp32 path -----------------------------------------


def test_unwrapped_mixed_precision_model_still_autocasts_and_fp32_path_does_not():
    accelerator = make_accelerator("bf16")
    model = create_model("small_cnn", num_classes=3)
    reference = create_model("small_cnn", num_classes=3)
    reference.load_state_dict(model.state_dict())
    raw = accelerator.unwrap_model(accelerator.prepare(model)).eval()
    x = torch.randn(4, 3, 28, 28)
    exact = reference.eval()(x)
    assert not torch.equal(raw(x), exact), "the trap (what ODIN called before): bf16 math, cast back to fp32"
    with accelerator.autocast():
        logits = Fp32Logits(raw)(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, exact, rtol=0, atol=0)


def test_training_evaluation_and_ascood_eval_agree_after_bf16_training(tmp_path):
    """Same checkpoint, same scorer, same parameters → same numbers, perturbation scorers included."""
    from ascood.posthoc import evaluate_run

    cfg = validate_config(dict(benchmark=SMALL, epochs=1, mixed_precision="bf16", eval_batch_size=256,
                               scorers="odin,iodin,energy,scale"))
    trained = run_trial(cfg, tmp_path)
    assert trained.status == "completed"
    again = evaluate_run(tmp_path, benchmark=None, scorer_names=None, search=False, use_cache=False)
    cols = ["split", "ood_set", "scorer"]
    a = pd.DataFrame(trained.rows).set_index(cols).sort_index()
    b = pd.DataFrame(again).set_index(cols).sort_index()
    assert set(a.index.get_level_values("scorer")) == {"odin", "iodin", "energy", "scale"}
    pd.testing.assert_series_equal(a["auroc"], b["auroc"])
    pd.testing.assert_series_equal(a["fpr95"], b["fpr95"])


# ---- memory: input-gradient scoring in chunks, parameters frozen --------------------------------


def _evaluator(grad_batch_size):
    data = load_benchmark(SMALL)
    return data, Evaluator(data, make_accelerator(), batch_size=200, grad_batch_size=grad_batch_size)


def test_input_gradient_chunks_on_a_gpu_are_what_training_already_holds():
    assert grad_chunk(64, "ascood", torch.device("cuda", 0)) == 128  # ID + outliers
    assert grad_chunk(64, "ce", torch.device("cuda", 0)) == 64
    assert grad_chunk(64, "ascood", torch.device("cpu")) is None  # host memory: the whole evaluation batch


@pytest.mark.parametrize("scorer", [ODIN(temperature=1000.0), IODIN(temperature=1000.0)], ids=["odin", "iodin"])
def test_input_gradient_scores_in_chunks_equal_one_pass_and_leave_no_grads(scorer):
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2).eval()
    model.fc.weight.requires_grad_(False)  # a frozen layer stays frozen afterwards
    _, whole = _evaluator(None)
    _, chunked = _evaluator(7)
    key = ("val", "id")
    a = whole.input_scores(scorer, model, whole._loader(key))
    b = chunked.input_scores(scorer, model, chunked._loader(key))
    torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in model.parameters()), "scoring filled parameter gradients"
    assert [p.requires_grad for p in model.parameters()].count(False) == 1


# ---- the training step --------------------------------------------------------------------------


@pytest.mark.parametrize("ood_type, saliency_mode", [("gradient", "eval"), ("gradient", "train"), ("gaussian", "eval")])
def test_training_step_has_no_host_sync_and_keeps_channels_last(ood_type, saliency_mode):
    cfg = validate_config(dict(benchmark=SMALL, ood_type=ood_type, saliency_mode=saliency_mode, alpha_scale="relative",
                               alpha_max=0.1, alpha_min=0.1))
    accelerator = make_accelerator()
    model = create_model("small_cnn", num_classes=2).to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    normalize = Normalizer([0.5] * 3, [0.25] * 3, channels_last=True)
    images = torch.randint(0, 256, (8, 3, 36, 36), dtype=torch.uint8)
    y = torch.randint(0, 2, (8,))
    g = torch.Generator().manual_seed(0)
    with recorded_ops() as ops:
        x = normalize(random_resized_crop(images, 32, generator=g))
        losses = train_step(model, model, x, y, cfg=cfg, alpha=0.1, generator=g, accelerator=accelerator,
                            params=params)
    assert not HOST_OPS & set(ops.names), sorted(HOST_OPS & set(ops.names))
    assert torch.isfinite(losses.loss)
    assert x.grad is None, "the backward computed the input gradient again"
    assert all(p.grad is not None for p in params)


@pytest.mark.parametrize("kind, scale", [("gradient", "absolute"), ("gradient", "relative"),
                                         ("gradient-subtract", "absolute"), ("shuffle", "absolute"),
                                         ("gaussian", "absolute"), ("gaussian", "relative")])
def test_outliers_keep_the_batch_layout(kind, scale):
    cl = torch.channels_last
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=cl)
    grad = torch.randn(4, 3, 8, 8)  # NCHW, as a mask or an autograd result may be
    out, _ = synthesize_scaled(kind, x, grad, alpha=0.5, p_inv=0.1, alpha_scale=scale,
                               generator=torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=cl)
    assert torch.cat([x, out]).is_contiguous(memory_format=cl), "the ID + outlier batch fell back to NCHW"
    plain, _ = synthesize_scaled(kind, x.contiguous(), grad, alpha=0.5, p_inv=0.1, alpha_scale=scale,
                                 generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, plain)


def test_global_pool_is_adaptive_pool_with_an_exact_backward():
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64, requires_grad=True)
    pooled = GlobalAvgPool()(x)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, 1))
    (grad,) = torch.autograd.grad(pooled.sum(), x)
    assert torch.equal(grad, torch.full_like(x, 1 / 42))
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for name in ("small_cnn", "resnet18_32x32", "resnet18")
                   for m in create_model(name, num_classes=2).modules())


# ---- between trials and across a resume ---------------------------------------------------------


def test_release_drops_the_finished_runs_model(tmp_path):
    accelerator = make_accelerator()
    seen = []
    cfg = validate_config(dict(benchmark=SMALL, epochs=1, scorers="msp", eval_batch_size=512))
    run_trial(cfg, tmp_path, accelerator=accelerator, on_epoch=lambda stats, model: seen.append(weakref.ref(model)))
    assert accelerator._models, "the accelerator holds the prepared model after the run"
    release(accelerator)
    gc.collect()
    assert not accelerator._models and not accelerator._optimizers
    assert seen and seen[0]() is None, "the run's model outlived it"


def test_loss_scaler_state_is_kept_in_the_checkpoint(tmp_path):
    model = create_model("small_cnn", num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))
    scaler.update(256.0)
    save_checkpoint(tmp_path, model, opt, sched, 1, validate_config({}), scaler)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(state["scaler"])
    assert restored.get_scale() == 256.0
