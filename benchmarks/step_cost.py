"""Median wall-clock ms per training step: plain CE vs ASCOOD (ours) vs ASCOOD as released.

Same model, batch and seed for every variant; steps are interleaved round-robin so machine noise
hits all variants alike. Variants:
- ce: forward + backward on B images.
- ascood (eval saliency, ours): eval-mode input-only gradient, one forward/backward on [x; x'].
- ascood (train saliency, ours): reuses the ID train-mode forward for the saliency.
- ascood (released): eval-mode saliency by a full backward that also fills parameter gradients
  (then thrown away), as the authors' code computes it.

    python benchmarks/step_cost.py --backbone resnet18_32x32 --batch-size 64 --steps 15 [--mixed-precision bf16]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ascood.config import validate_config
from ascood.method.losses import ascood_loss
from ascood.method.synthesis import synthesize
from ascood.models import create_model
from ascood.train import ascood_step, build_optimizer, ce_step, make_accelerator


def released_step(model, x, y, cfg, alpha, generator):
    """The released algorithm: saliency by `loss.backward()` in eval mode (parameter grads too)."""
    model.eval()
    x_req = x.detach().clone().requires_grad_(True)
    model(x_req).gather(1, y[:, None]).sum().backward()
    grad = x_req.grad
    model.zero_grad(set_to_none=True)
    model.train()
    x_ood = synthesize(cfg.ood_type, x, grad, alpha=alpha, p_inv=cfg.p_inv, generator=generator)
    logits = model(torch.cat([x, x_ood]))
    b = x.shape[0]
    return ascood_loss(logits[:b], y, logits[b:], cfg.lam)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18_32x32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    args = p.parse_args()

    accelerator = make_accelerator(args.mixed_precision)
    device = accelerator.device
    cfg = validate_config({"backbone": args.backbone, "p_inv": 0.1, "lam": 1.0})
    torch.manual_seed(0)
    model = create_model(args.backbone, num_classes=args.num_classes).to(device)
    opt = build_optimizer(model, 0.01, 0.9, 5e-4, True, 1.0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def run(kind: str) -> None:
        if kind == "ce":
            loss = ce_step(model, x, y, accelerator)[0]
        elif kind == "released":
            with accelerator.autocast():
                loss = released_step(model, x, y, cfg, 1.0, gen)[0]
        else:
            step_cfg = cfg.model_copy(update={"saliency_mode": kind})
            loss = ascood_step(model, model, x.clone(), y, cfg=step_cfg, alpha=1.0, generator=gen, accelerator=accelerator)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    kinds = {
        "ce": "plain CE", "eval": "ASCOOD, eval saliency (ours)",
        "train": "ASCOOD, train saliency reusing ID forward (ours)", "released": "ASCOOD as released",
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    model.train()
    for i in range(args.warmup + args.steps):
        for k in kinds:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(k)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[k].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# step cost: {args.backbone}, batch {args.batch_size}, channels_last {args.channels_last}, "
          f"mixed precision {args.mixed_precision}, "
          f"{args.steps} steps (median), device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| variant | median ms/step | × CE |")
    print("|---|---:|---:|")
    for k, label in kinds.items():
        print(f"| {label} | {med[k]:.1f} | {med[k] / med['ce']:.2f} |")
    print(f"\nours (eval) vs released: {med['released'] / med['eval']:.2f}× faster")


if __name__ == "__main__":
    main()
