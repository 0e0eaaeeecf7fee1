"""The training loop, managed by Accelerate (device placement, mixed precision, DDP).

One process or several (DDP via torchrun / Ray Train; on CPU that needs `Accelerator(cpu=True)`,
which `make_accelerator` passes whenever the run is not to use a GPU). A checkpoint is written
after every epoch and a run resumes from it; data order and synthesis noise are drawn from
(seed, epoch), so a resumed run continues exactly as an uninterrupted one would: bit for bit on
the CPU, and on a GPU in `deterministic` mode (otherwise cuDNN's autotuned kernels and atomic
adds make each epoch differ in the last bits).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from ascood.config import TrainConfig, config_json
from ascood.data import BenchmarkData, Split
from ascood.data.loading import OutlierBatches, Preprocess, train_loader
from ascood.method.losses import ascood_loss, logitnorm_loss
from ascood.method.outlier_exposure import mix, mix_ratio, mixoe_loss, oe_loss
from ascood.method.registry import METHODS
from ascood.method.saliency import saliency_from_logits, true_class_saliency
from ascood.method.schedule import alpha_at, cosine_lr_factor
from ascood.method.synthesis import needs_saliency, synthesize_scaled
from ascood.method.vos import VOSHead
from ascood.method.vos import start_epoch as vos_start_epoch
from ascood.models import OODNet, create_model
from ascood.run_dir import CHECKPOINT  # (the run directory layout lives there)


class RunFailed(RuntimeError):
    """The run cannot go on; it ends `failed` with this message as the reason (never a crash)."""


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite."""


class CheckpointMismatch(ValueError):
    """The run directory holds a checkpoint of a different configuration."""


class DeviceUnavailable(ValueError):
    """The run asks for a device (or a precision on it) that this process does not have."""


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # epochs completed (1-based)
    alpha: float  # the schedule's α (relative α when alpha_scale is relative)
    loss: float
    ce: float
    kl: float
    lr: float
    seconds: float
    alpha_eff: float | None = None  # mean absolute α actually applied over the epoch's steps (ASCOOD runs)


class StepLosses(NamedTuple):
    loss: Tensor
    ce: Tensor
    kl: Tensor
    alpha_eff: Tensor  # 0-d, on the device: the absolute α this step applied


def make_accelerator(mixed_precision: str = "no", *, use_gpu: bool | None = None) -> Accelerator:
    """An Accelerator that really wraps DDP on CPU too (plain `Accelerator()` silently does not).

    `use_gpu=None` takes CUDA when it is visible (the command lines); a sweep trial passes what it
    asked Ray for, because Ray no longer hides GPUs from a process that asked for none. On CUDA,
    host-to-device copies of (pinned) batches do not block.

    One process may run several runs (a reused Tune trial actor, `ascood-eval` over several run
    directories) and Accelerate keeps one global state per process that refuses a different
    mixed-precision setting: that state is reset here; the process group (held by `PartialState`)
    is kept.
    """
    cuda = torch.cuda.is_available() if use_gpu is None else use_gpu
    if cuda and not torch.cuda.is_available():
        raise DeviceUnavailable("the run asks for a GPU and this process sees none (CUDA_VISIBLE_DEVICES, driver)")
    if cuda and mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailable(f"mixed_precision: bf16 is not supported on {torch.cuda.get_device_name()}; "
                                "use fp16 or no")
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=not cuda, mixed_precision=mixed_precision,
                       dataloader_config=DataLoaderConfiguration(non_blocking=cuda))


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cuDNN autotuning for training speed, or (opt-in) deterministic kernels everywhere.

    Set at the start of every run: a reused trial actor may run a deterministic trial after a
    fast one. In deterministic mode an op without a deterministic kernel raises, naming the op.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what cuBLAS needs to be reproducible
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # setting it imports torch._inductor (2-3 s)
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def release(accelerator: Accelerator) -> None:
    """Drop what the accelerator holds of a finished run and hand cached CUDA memory back, so a
    reused trial actor starts its next trial with the GPU memory of a fresh process.

    What survives the collection (modules, caches: everything a process keeps) is then frozen out
    of later collections: a full collection over torch, Ray and the trackers' objects takes about
    0.4 s, paid twice per trial (Accelerate collects too), and the next trial's collection only
    needs to look at what that trial made. (A frozen object that later becomes cyclic garbage is
    never collected: a few small objects per trial, against 0.8 s per trial.)"""
    accelerator.free_memory()
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    gc.freeze()


def build_optimizer(
    model: OODNet, lr: float, momentum: float, weight_decay: float, nesterov: bool, fc_lr_factor: float,
    extra: list[Tensor] | None = None,
) -> torch.optim.SGD:
    """SGD with two groups: the final linear layer at lr·fc_lr_factor, everything else at lr; `extra`
    (a method's own parameters, VOS's) a third group at lr, as the VOS reference trains them."""
    fc_ids = {id(p) for p in model.fc.parameters()}
    rest = [p for p in model.parameters() if id(p) not in fc_ids]
    groups = [{"params": rest, "lr": lr}, {"params": list(model.fc.parameters()), "lr": lr * fc_lr_factor}]
    if extra:
        groups.append({"params": list(extra), "lr": lr})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, lr: float) -> LambdaLR:
    """Cosine annealing stepped every iteration, lr → 1e-6 over the whole run."""
    return LambdaLR(optimizer, lambda step: cosine_lr_factor(step, total_steps, lr))


def run_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


def load_checkpoint(run_dir: Path, cfg: TrainConfig) -> dict | None:
    """The run's checkpoint if any; refuses one written by a different configuration."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["config"])
    mine = json.loads(config_json(cfg))
    if saved != mine:
        diff = sorted(k for k in mine if saved.get(k) != mine[k])
        raise CheckpointMismatch(
            f"{run_dir}: holds a run with a different configuration (differs in {', '.join(diff)}); "
            "use another --out or --overwrite"
        )
    return state


def save_checkpoint(run_dir: Path, model: nn.Module, optimizer, scheduler, epoch: int, cfg: TrainConfig,
                    scaler=None, vos: VOSHead | None = None) -> None:
    """Atomically; with fp16 the loss scaler's state too, so a resumed run scales as it would have;
    for VOS its head and queues under `vos` (`model` stays the scored network alone)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "config": config_json(cfg),
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if vos is not None:
        state["vos"] = vos.state_dict()
    tmp = run_dir / f".{CHECKPOINT}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def sync_buffers(model: nn.Module, accelerator: Accelerator) -> None:
    """Give every rank rank 0's BatchNorm running statistics.

    DDP broadcasts buffers only at the start of a forward pass, so after the last step of an epoch
    each rank holds statistics of its own shard; evaluation and checkpoints need one model.
    """
    if accelerator.num_processes > 1:
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)


def ascood_step(
    model: nn.Module, raw: nn.Module, x: Tensor, y: Tensor, *, cfg: TrainConfig, alpha: float,
    generator: torch.Generator, accelerator: Accelerator,
) -> StepLosses:
    """One ASCOOD loss: synthesize x' from the current model, then CE(x) + λ·KL(U‖p(x'))."""
    kind = cfg.ood_type
    if needs_saliency(kind) and cfg.saliency_mode == "train":
        # Train-mode saliency reusing the ID forward pass; ID and outliers then pass separately
        # through BatchNorm (batch statistics of B each, not of the concatenated 2B).
        x = x.requires_grad_(True)
        with accelerator.autocast():
            logits_id = raw(x)
        grad = saliency_from_logits(logits_id, x, y)
        x_ood, alpha_eff = synthesize_scaled(kind, x.detach(), grad, alpha=alpha, p_inv=cfg.p_inv,
                                             alpha_scale=cfg.alpha_scale, generator=generator)
        with accelerator.autocast():
            logits_ood = model(x_ood)
        return StepLosses(*ascood_loss(logits_id.float(), y, logits_ood.float(), cfg.lam), alpha_eff)
    grad = None
    if needs_saliency(kind):
        with accelerator.autocast():
            grad = true_class_saliency(raw, x, y, train_mode=False)
    x_ood, alpha_eff = synthesize_scaled(kind, x, grad, alpha=alpha, p_inv=cfg.p_inv, alpha_scale=cfg.alpha_scale,
                                         generator=generator)
    with accelerator.autocast():
        logits = model(torch.cat([x, x_ood])).float()
    b = x.shape[0]
    return StepLosses(*ascood_loss(logits[:b], y, logits[b:], cfg.lam), alpha_eff)


def ce_step(model: nn.Module, x: Tensor, y: Tensor, accelerator: Accelerator) -> StepLosses:
    """Cross-entropy through the run's head: plain CE, and T2FNorm (whose head normalizes in training)."""
    with accelerator.autocast():
        ce = F.cross_entropy(model(x).float(), y)
    return StepLosses(ce, ce, torch.zeros_like(ce), torch.zeros_like(ce))


def logitnorm_step(model: nn.Module, x: Tensor, y: Tensor, accelerator: Accelerator, tau: float) -> StepLosses:
    """LogitNorm's loss; `ce` reports the plain CE of the same logits, for comparison across methods."""
    with accelerator.autocast():
        logits = model(x).float()
    loss = logitnorm_loss(logits, y, tau)
    return StepLosses(loss, F.cross_entropy(logits.detach(), y), torch.zeros_like(loss), torch.zeros_like(loss))


def vos_step(
    model: nn.Module, raw: OODNet, x: Tensor, y: Tensor, *, cfg: TrainConfig, vos: VOSHead, active: bool,
    generator: torch.Generator, accelerator: Accelerator,
) -> StepLosses:
    """VOS: CE + w·uncertainty loss; `kl` reports the uncertainty loss (0 until it starts).

    The features the final layer sees are taken by a hook on it during the (DDP) forward pass and
    enter the queues, gathered from every rank in rank order, so every rank keeps the same queues.
    Once `active` (the start epoch, a host decision) the loss is computed every step and kept only
    where the queues were full before the batch (a device flag, as the reference decides): the
    step never waits for the device. Each rank draws its own outliers from its generator.
    """
    taken: list[Tensor] = []
    hook = raw.fc.register_forward_pre_hook(lambda _module, args: taken.append(args[0]))
    try:
        with accelerator.autocast():
            logits = model(x).float()
    finally:
        hook.remove()
    features, labels = taken[0].detach().float(), y
    if accelerator.num_processes > 1:
        features, labels = accelerator.gather(features), accelerator.gather(y)
    was_full = vos.enqueue(features, labels)
    ce = F.cross_entropy(logits, y)
    zero = torch.zeros_like(ce)
    if not active:
        return StepLosses(ce, ce, zero, zero)
    outliers = vos.virtual_outliers(int(cfg.method_option("vos_sample_from")), int(cfg.method_option("vos_select")),
                                    generator)
    with accelerator.autocast():
        logits_ood = raw.fc(outliers).float()
    uncertainty = torch.where(was_full, vos.loss(logits, logits_ood), zero)
    return StepLosses(ce + cfg.method_option("vos_loss_weight") * uncertainty, ce, uncertainty, zero)


def oe_step(model: nn.Module, x: Tensor, y: Tensor, x_out: Tensor, accelerator: Accelerator, lam: float) -> StepLosses:
    """OE: ID and outliers through one forward pass (as the reference), CE + λ·KL(U‖p) on the outliers."""
    with accelerator.autocast():
        logits = model(torch.cat([x, x_out])).float()
    b = x.shape[0]
    loss, ce, kl = oe_loss(logits[:b], y, logits[b:], lam)
    return StepLosses(loss, ce, kl, torch.zeros_like(loss))


def mixoe_step(
    model: nn.Module, raw: nn.Module, x: Tensor, y: Tensor, x_out: Tensor, accelerator: Accelerator, *,
    op: str, alpha: float, beta: float, rng: np.random.Generator,
) -> StepLosses:
    """MixOE: the ID batch and its mix with as many outliers in two forward passes, as the reference
    (BatchNorm sees each batch alone); the ID pass goes through the unwrapped model, so DDP sees one
    forward per step. `kl` reports the mixed soft CE."""
    mixed, lam = mix(x, x_out[: x.shape[0]], op, mix_ratio(alpha, rng), rng)
    with accelerator.autocast():
        logits_id = raw(x).float()
        logits_mixed = model(mixed).float()
    loss, ce, soft = mixoe_loss(logits_id, y, logits_mixed, lam, beta)
    return StepLosses(loss, ce, soft, torch.zeros_like(loss))


def train_step(
    model: nn.Module, raw: nn.Module, x: Tensor, y: Tensor, *, cfg: TrainConfig, alpha: float,
    generator: torch.Generator, accelerator: Accelerator, params: list[Tensor],
    vos: VOSHead | None = None, vos_active: bool = False, x_out: Tensor | None = None,
    rng: np.random.Generator | None = None,
) -> StepLosses:
    """The step's loss and its backward into `params` only: with train-mode saliency the input
    needs a gradient for the saliency, and a plain backward would compute it again into `x.grad`.
    A VOS run passes its head (whose parameters are among `params`) and whether its loss has started;
    OE and MixOE runs the step's external outliers (preprocessed) and MixOE a host generator."""
    if METHODS[cfg.method].external_outliers and x_out is None:
        raise ValueError(f"a {cfg.method} step needs its external outliers (x_out=)")
    if cfg.method == "mixoe" and rng is None:
        raise ValueError("a mixoe step needs the epoch's host generator (rng=) for its mixing draws")
    if cfg.method == "oe":
        losses = oe_step(model, x, y, x_out, accelerator, float(cfg.method_option("oe_lambda")))
    elif cfg.method == "mixoe":
        losses = mixoe_step(model, raw, x, y, x_out, accelerator, op=str(cfg.method_option("mixoe_op")),
                            alpha=float(cfg.method_option("mixoe_alpha")), beta=float(cfg.method_option("mixoe_beta")),
                            rng=rng)
    elif cfg.method == "ascood":
        losses = ascood_step(model, raw, x, y, cfg=cfg, alpha=alpha, generator=generator, accelerator=accelerator)
    elif cfg.method == "logitnorm":
        losses = logitnorm_step(model, x, y, accelerator, cfg.method_option("logitnorm_tau"))
    elif cfg.method == "vos":
        if vos is None:
            raise ValueError("a VOS step needs its VOSHead (vos=)")
        losses = vos_step(model, raw, x, y, cfg=cfg, vos=vos, active=vos_active, generator=generator,
                          accelerator=accelerator)
    else:
        losses = ce_step(model, x, y, accelerator)
    accelerator.backward(losses.loss, inputs=params)
    if vos is not None and vos_active:
        vos.average_gradients(accelerator)
    return losses


EpochHook = Callable[[EpochStats, OODNet], None]
StepHook = Callable[[int, int, int], None]  # (epoch, step in epoch, steps per epoch)


def fit(
    cfg: TrainConfig,
    data: BenchmarkData,
    run_dir: Path,
    accelerator: Accelerator,
    *,
    on_epoch_end: EpochHook | None = None,
    on_step: StepHook | None = None,
    after_checkpoint: Callable[[EpochStats], None] | None = None,
    outliers: Split | None = None,
) -> OODNet:
    """Train (or resume) a run in `run_dir`; returns the unwrapped model. OE and MixOE runs pass
    their external `outliers` (stored like the benchmark's images).

    Per epoch: train, `on_epoch_end` (evaluation and result rows), checkpoint, then
    `after_checkpoint` — the last thing of the epoch, where a Tune report belongs: Tune may stop
    the trial process right there, and nothing of the epoch is lost.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(run_dir, cfg)
    set_seed(cfg.seed)
    model = create_model(cfg.backbone, num_classes=data.num_classes, weights=cfg.weights, **cfg.head_options())
    vos = (VOSHead(data.num_classes, model.fc.in_features, int(cfg.method_option("vos_sample_number")))
           if cfg.method == "vos" else None)
    device = accelerator.device
    configure_backends(device, cfg.deterministic)
    loader, sampler = train_loader(data.train, cfg.batch_size, cfg.seed, cfg.num_workers,
                                   pin_memory=device.type == "cuda")
    loader = accelerator.prepare(loader)
    steps_per_epoch = len(loader)
    optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.fc_lr_factor,
                                extra=None if vos is None else list(vos.parameters()))
    # The scheduler is built before the states are loaded: building it resets the groups' lr.
    scheduler = build_scheduler(optimizer, cfg.epochs * steps_per_epoch, cfg.lr)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if vos is not None:
            vos.load_state_dict(state["vos"])
    if vos is not None:  # moved before the optimizer is prepared, which moves its state to the device
        vos.to(device).broadcast(accelerator)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, optimizer = accelerator.prepare(model, optimizer)
    if state is not None and accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    start_epoch = 0 if state is None else int(state["epoch"])
    raw: OODNet = accelerator.unwrap_model(model)
    params = [p for p in model.parameters() if p.requires_grad] + ([] if vos is None else list(vos.parameters()))
    vos_start = vos_start_epoch(cfg.method_option("vos_start"), cfg.epochs) if vos is not None else None
    preprocess = Preprocess(data, cfg.channels_last)
    stream = None
    if METHODS[cfg.method].external_outliers:
        if outliers is None:
            raise ValueError(f"method {cfg.method} trains on external outliers; fit needs them (outliers=)")
        factor = int(cfg.method_option("oe_batch_factor")) if cfg.method == "oe" else 1
        stream = OutlierBatches(outliers, cfg.batch_size * factor, cfg.seed, accelerator.process_index, device)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        sampler.use_epoch(epoch)
        torch.manual_seed(run_seed(cfg.seed, epoch, accelerator.process_index))
        generator = torch.Generator(device=device).manual_seed(run_seed(cfg.seed, epoch, accelerator.process_index))
        host_rng = np.random.default_rng(run_seed(cfg.seed, epoch, accelerator.process_index))
        out_batches = stream.epoch(epoch) if stream is not None else None
        alpha = alpha_at(epoch, cfg.epochs, cfg.alpha_max, cfg.alpha_min)
        model.train()
        sums = torch.zeros(4, device=device)
        for step, (images, y) in enumerate(loader):
            x = preprocess.train(images, generator)
            x_out = preprocess.train(next(out_batches), generator) if out_batches is not None else None
            loss, ce, kl, alpha_eff = train_step(model, raw, x, y, cfg=cfg, alpha=alpha, generator=generator,
                                                 accelerator=accelerator, params=params, vos=vos,
                                                 vos_active=vos is not None and epoch >= vos_start, x_out=x_out,
                                                 rng=host_rng)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            sums += torch.stack([loss.detach(), ce.detach(), kl.detach(), alpha_eff.to(sums.dtype)])
            if on_step is not None:
                on_step(epoch, step + 1, steps_per_epoch)
        sync_buffers(raw, accelerator)
        means = accelerator.reduce(sums, reduction="mean") / steps_per_epoch
        loss_v, ce_v, kl_v, alpha_eff_v = (float(v) for v in means.cpu())
        if not math.isfinite(loss_v):
            raise TrainingDiverged(f"loss became {loss_v} in epoch {epoch + 1} (alpha={alpha:g})")
        stats = EpochStats(epoch + 1, alpha, loss_v, ce_v, kl_v, scheduler.get_last_lr()[0], time.perf_counter() - t0,
                           alpha_eff_v if cfg.method == "ascood" and cfg.ood_type != "shuffle" else None)
        if on_epoch_end is not None:
            on_epoch_end(stats, raw)
        if accelerator.is_main_process:
            save_checkpoint(run_dir, raw, optimizer, scheduler, epoch + 1, cfg, accelerator.scaler, vos)
        accelerator.wait_for_everyone()
        if after_checkpoint is not None:
            after_checkpoint(stats)
    return raw
