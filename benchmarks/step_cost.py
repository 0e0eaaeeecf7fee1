"""Median wall-clock ms per training step: plain CE vs ASCOOD (ours) vs ASCOOD as released.

Same model, batch and seed for every variant; steps are interleaved round-robin so machine noise
hits all variants alike. Variants:
- ce: forward + backward on B images.
- ascood (eval saliency, ours): eval-mode input-only gradient, one forward/backward on [x; x'].
- ascood (train saliency, ours): reuses the ID train-mode forward for the saliency.
- ascood (released): eval-mode saliency by a full backward that also fills parameter gradients
  (then thrown away), as the authors' code computes it.

    python benchmarks/step_cost.py --backbone resnet18_32x32 [small_cnn …] --batch-size 64 [32 …] --steps 15
        [--mixed-precision bf16] [--work DIR] [--resume] [--table] [--quick]

Each backbone × batch size is a case, one row in `DIR/rows.jsonl` as soon as it is measured
(benchmarks/rows.py); `--resume` measures only the cases not there, also those of another layout or
precision beside them; `--table` prints the BENCHMARKS.md table from the rows.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import rows

# torch and ascood are imported where they are used: --table and a finished --resume import neither


def released_step(model, x, y, cfg, alpha, generator):
    """The released algorithm: saliency by `loss.backward()` in eval mode (parameter grads too)."""
    import torch

    from ascood.method.losses import ascood_loss
    from ascood.method.synthesis import synthesize

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


KINDS = {
    "ce": "plain CE", "eval": "ASCOOD, eval saliency (ours)",
    "train": "ASCOOD, train saliency reusing ID forward (ours)", "released": "ASCOOD as released",
}


def measure(args: argparse.Namespace, accelerator, backbone: str, batch_size: int) -> dict:
    """Median ms per step of each variant, the variants interleaved round-robin."""
    import torch

    from ascood.config import validate_config
    from ascood.models import create_model
    from ascood.train import ascood_step, build_optimizer, ce_step

    device = accelerator.device
    cfg = validate_config({"backbone": backbone, "p_inv": 0.1, "lam": 1.0})
    torch.manual_seed(0)
    model = create_model(backbone, num_classes=args.num_classes).to(device)
    opt = build_optimizer(model, 0.01, 0.9, 5e-4, True, 1.0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, args.num_classes, (batch_size,), device=device)
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

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    model.train()
    for i in range(args.warmup + args.steps):
        for k in KINDS:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(k)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[k].append((time.perf_counter() - t0) * 1000)
    return {"backbone": backbone, "batch_size": batch_size, "channels_last": args.channels_last,
            "mixed_precision": args.mixed_precision, "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "median_ms": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "ms": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def case(backbone: str, batch_size: int, channels_last: bool, precision: str) -> str:
    return f"{backbone}, batch {batch_size}, {'channels_last' if channels_last else 'NCHW'}, {precision}"


def table(rows_: list[dict]) -> str:
    def cell(r: dict, k: str) -> str:
        ms = r["median_ms"][k]
        return f"{ms:.1f} ms ({ms / r['median_ms']['ce']:.2f}×)"

    lines = [(f"{r['case']}{' (quick)' if r.get('quick') else ''}", *(cell(r, k) for k in KINDS),
              f"{r['median_ms']['released'] / r['median_ms']['eval']:.2f}×") for r in rows_]
    return rows.markdown(["model, batch, layout, precision", "plain CE", "ASCOOD ours, eval saliency",
                          "ASCOOD ours, train saliency (reuses ID forward)", "ASCOOD as released",
                          "ours (eval) faster than released"], lines, "lrrrrr")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", nargs="+", default=["resnet18_32x32"])
    p.add_argument("--batch-size", type=int, nargs="+", default=[64])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    rows.add_options(p, "step-cost", "small CNN, batch 16, 2 steps after 1 warm-up")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.backbone, args.batch_size, args.steps, args.warmup = ["small_cnn"], [16], 2, 1
    book = rows.Rows(args, free=("backbone", "batch_size", "channels_last", "mixed_precision"))
    cases = {case(b, n, args.channels_last, args.mixed_precision): (b, n) for b in args.backbone for n in args.batch_size}
    if book.missing(cases):
        import torch

        from ascood.train import make_accelerator

        accelerator = make_accelerator(args.mixed_precision)
        print(f"# step cost: mixed precision {args.mixed_precision}, {args.steps} steps (median), device "
              f"{accelerator.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{platform.processor() or platform.machine()}", flush=True)
        book.measure(((c, lambda b=b, n=n: measure(args, accelerator, b, n)) for c, (b, n) in cases.items()),
                     say=lambda r: f"{r['case']}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r["median_ms"].items()))
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
