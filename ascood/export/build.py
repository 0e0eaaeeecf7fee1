"""A run directory → a bundle: the scorer fitted (and searched) as `ascood-eval` fits it, the
threshold calibrated on ID validation scores, the operating point and metrics measured on test.

The forward passes, the fit, the grid search and the scores are `ascood-eval`'s own (`Evaluator`,
the run's cached features in `RUN/features/`), so the bundle's test metrics are the ones
`ascood-eval` reports for the same scorer and parameters. Only validation data chooses (the grid
point, the threshold); test data is measured and reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ascood.config import TrainConfig
from ascood.data import BenchmarkData, load_benchmark, parse_name
from ascood.data.embedded import MNIST6_ID_DIGITS
from ascood.evaluate import Evaluator, grad_chunk
from ascood.export import bundle as B
from ascood.export.card import model_card
from ascood.export.state import dump_state
from ascood.export.threshold import operating_point, rate
from ascood.metrics import accuracy, ood_metrics
from ascood.models import OODNet, create_model
from ascood.posthoc import RunDirError, load_run
from ascood.results import code_version, run_id_for
from ascood.scorers import SCORERS, Scorer, build_scorer
from ascood.train import CHECKPOINT, make_accelerator


class ExportError(ValueError):
    """Why a run cannot become a bundle (scorer, parameters, ONNX support, a failed fit); one line."""


@dataclass(frozen=True)
class ExportOptions:
    scorer: str = "energy"
    params: dict[str, Any] = field(default_factory=dict)  # fixed scorer parameters (never searched)
    search: bool = True  # search the scorer's grid on validation, as `ascood-eval` does
    tpr: float = 0.95
    device: str | None = None  # "cpu" or "cuda" (default: CUDA when visible)
    data_root: Path | None = None
    skip_corrupt: bool = False
    class_names: tuple[str, ...] | None = None
    onnx: bool = False
    chosen_by: str = "the run directory given"
    sweep: str | None = None


def check_scorer(options: ExportOptions) -> type[Scorer]:
    """The scorer class, its parameters and ONNX support checked before any work."""
    if options.scorer not in SCORERS:
        raise ExportError(f"--scorer: unknown {options.scorer!r}; expected one of {', '.join(SCORERS)}")
    cls = SCORERS[options.scorer]
    unknown = sorted(set(options.params) - set(cls.defaults))
    if unknown:
        known = ", ".join(cls.defaults) or "none"
        raise ExportError(f"--param: scorer {cls.name} has no parameter {unknown[0]!r} (its parameters: {known})")
    searched = sorted(set(options.params) & set(cls.grid)) if options.search else []
    if searched:
        raise ExportError(f"--param {searched[0]}: searched on validation by {cls.name}; pass --no-search to fix it")
    if options.onnx:
        from ascood.export.onnx import onnx_refusal

        reason = onnx_refusal(cls)
        if reason:
            raise ExportError(f"--onnx: {reason}")
    return cls


def default_class_names(benchmark: str, num_classes: int) -> tuple[str, ...]:
    """The embedded benchmarks' digits by name; a real benchmark's classes by index (`--class-names`
    gives real names)."""
    base, _ = parse_name(benchmark)
    if base == "mnist6":
        return tuple(f"digit {d}" for d in MNIST6_ID_DIGITS)
    if base in ("cmnist", "mnist10"):
        return tuple(f"digit {d}" for d in range(num_classes))
    return tuple(f"class {c}" for c in range(num_classes))


def _model(cfg: TrainConfig, state: dict, data: BenchmarkData, run_dir: Path) -> OODNet:
    if data.num_classes != cfg.fc_classes(state):
        raise RunDirError(f"{run_dir}: trained with {cfg.fc_classes(state)} classes, {data.name} has {data.num_classes}")
    model = create_model(cfg.backbone, num_classes=data.num_classes, **cfg.head_options())
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise RunDirError(f"{run_dir / CHECKPOINT}: does not fit a {cfg.backbone} model ({detail})") from None
    return model


@dataclass
class Built:
    """Everything of a bundle before it is written, plus the scores it was calibrated and measured on."""

    manifest: B.Manifest
    model: OODNet
    scorer: Scorer
    weights: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    scores: dict[tuple[str, str], np.ndarray]  # (split, "id" or OOD set) → scores


def build(run_dir: str | Path, options: ExportOptions) -> Built:
    """Fit, calibrate and measure; nothing is written except the run's feature cache (as `ascood-eval`)."""
    run_dir = Path(run_dir)
    check_scorer(options)
    cfg, state = load_run(run_dir)
    data = load_benchmark(cfg.benchmark, root=options.data_root, skip_corrupt=options.skip_corrupt)
    names = options.class_names or default_class_names(cfg.benchmark, data.num_classes)
    if len(names) != data.num_classes:
        raise ExportError(f"--class-names: {len(names)} names for {data.num_classes} classes of {cfg.benchmark}")
    from ascood.detector import pick_device

    try:
        device = pick_device(options.device)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    accelerator = make_accelerator(use_gpu=device.type == "cuda")
    model = _model(cfg, state, data, run_dir)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(accelerator.device).eval()
    evaluator = Evaluator(data, accelerator, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                          fpr_convention=cfg.fpr_convention, channels_last=cfg.channels_last,
                          grad_batch_size=grad_chunk(cfg.batch_size, cfg.method, accelerator.device))
    epoch = int(state["epoch"])
    cache = run_dir / "features" / f"{cfg.benchmark}-epoch{epoch}.pt"  # ascood-eval's own cache
    overrides = cfg.scorer_overrides().get(options.scorer, {})
    scorer = build_scorer(options.scorer, **{**overrides, **options.params})
    outputs = evaluator.cached_outputs(model, cache)
    try:
        with evaluator.input_net(model):
            used, known = evaluator.fit_with_scores(scorer, model, outputs, search=options.search)
            keys = [("val", "id"), ("test", "id"), *[("test", o.name) for o in data.ood_sets("test")]]
            scores = {k: known[k] if k in known else evaluator.score(used, model, k, outputs).numpy() for k in keys}
    except Exception as exc:  # a degenerate fit or score: `ascood-eval` reports it as this scorer's error
        raise ExportError(f"scorer {options.scorer} failed on {run_dir}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    bad = [f"{s} {n}" for (s, n), v in scores.items() if not np.isfinite(v).all()]
    if bad:
        raise ExportError(f"scorer {options.scorer}: NaN or infinite scores on {bad[0]} of {run_dir}")
    point = operating_point(scores[("val", "id")], options.tpr)
    test = _test_report(data, outputs, scores, point.threshold, cfg.fpr_convention)
    tensors, layout = dump_state(used)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    g = data.geometry
    manifest = B.Manifest(
        schema_version=B.SCHEMA_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        source=B.Source(
            run_dir=str(run_dir.resolve()), run_id=run_id_for(cfg), benchmark=cfg.benchmark, setting=data.setting,
            embedded=data.embedded, method=cfg.method, epoch=epoch, seed=cfg.seed, config=json.loads(state["config"]),
            code_version=code_version(), chosen_by=options.chosen_by, sweep=options.sweep,
        ),
        model=B.ModelSpec(backbone=cfg.backbone, num_classes=data.num_classes, **cfg.head_options()),
        preprocessing=B.Preprocessing(decode_size=int(data.test.images.shape[-1]), crop=g.size, mean=data.mean,
                                      std=data.std, channels_last=cfg.channels_last),
        class_names=tuple(names),
        scorer=B.ScorerSpec(name=used.name, params=used.params(), selection="val-auroc" if options.search and
                            type(used).grid else "fixed", state=layout, needs_input=used.needs_input),
        threshold=B.Threshold(**point.as_dict()),
        test=test,
    )
    return Built(manifest, model, used, weights, tensors, scores)


def _test_report(data: BenchmarkData, outputs: dict, scores: dict, threshold: float, convention: str) -> B.TestReport:
    """Test metrics as `Evaluator.evaluate` computes them (each OOD set against the whole ID test
    set), plus the operating point: the share of each set accepted as ID at the threshold."""
    id_out, id_scores = outputs[("test", "id")], scores[("test", "id")]
    sets = []
    for o in data.ood_sets("test"):
        ood = scores[("test", o.name)]
        m = ood_metrics(id_scores, ood, fpr_convention=convention)
        sets.append(B.OODSetReport(ood_set=o.name, ood_group=o.group, n=len(ood), fpr_at_threshold=rate(ood, threshold),
                                   auroc=m.auroc, fpr95=m.fpr95, aupr_in=m.aupr_in, aupr_out=m.aupr_out))
    acc = accuracy(id_out.logits.argmax(dim=1).numpy(), id_out.labels.numpy())
    return B.TestReport(id_accuracy=acc, n_id=len(id_scores), id_tpr=rate(id_scores, threshold),
                        fpr_convention=convention, ood=tuple(sets))


def write(built: Built, out: str | Path, *, overwrite: bool = False, onnx: bool = False) -> B.Manifest:
    """The bundle at `out`, complete or not at all (staged in a temporary sibling, then renamed)."""
    with B.staging(Path(out), overwrite=overwrite) as tmp:
        B.save_tensors(tmp / B.WEIGHTS, built.weights)
        B.save_tensors(tmp / B.SCORER_STATE, built.state)
        manifest = built.manifest
        if onnx:
            from ascood.export.onnx import export_onnx

            export_onnx(built.manifest, built.model, built.scorer, tmp / B.ONNX)
            manifest = manifest.model_copy(update={"onnx": B.ONNX})
        (tmp / B.MODEL_CARD).write_text(model_card(manifest))
        return B.write_manifest(tmp, manifest)


def export_run(run_dir: str | Path, out: str | Path, options: ExportOptions, *, overwrite: bool = False) -> Built:
    """`ascood-export RUN --out BUNDLE`: build, then write; returns what was built (manifest as written)."""
    if Path(out).exists() and not overwrite:
        raise B.BundleError(f"--out {out}: already exists; choose another path or pass --overwrite")
    built = build(run_dir, options)
    built.manifest = write(built, out, overwrite=overwrite, onnx=options.onnx)
    return built
