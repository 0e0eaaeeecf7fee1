"""Everything a sweep checks before its first trial: the output it may claim, every dataset's data,
each named pretrained backbone, and the objective's OOD selection."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ascood import storage
from ascood.choices import expected_one_of
from ascood.data import DatasetError, load_benchmark
from ascood.models import WeightsError, create_model
from ascood.sweep.errors import SweepSetupError
from ascood.sweep.objective import ood_selection_names
from ascood.sweep.paths import SweepPaths
from ascood.sweep.spec import SweepSpec, trial_defaults


def check_output(out: str) -> None:
    """Before anything is created: the output must be (or become) a writable directory."""
    reason = storage.unusable_dir(out)
    if reason:
        raise SweepSetupError(f"output {out}: {reason}")


def prepare_output(paths: SweepPaths, spec_text: str, *, resume: bool, fresh: bool) -> Callable[[], None]:
    """Claim the output directory for this sweep file, or refuse with the reason. Returns what
    undoes the claim (a failing start leaves nothing behind that it created)."""
    check_output(paths.out)
    if fresh:
        storage.delete_tree(paths.out)
    previous = storage.read_text(paths.spec_copy)
    if previous is not None:
        if _digest(previous) != _digest(spec_text):
            raise SweepSetupError(
                f"{paths.out}: holds a sweep made from a different sweep file; "
                "use another output, or --fresh to delete it and start anew"
            )
        if not resume:
            raise SweepSetupError(f"{paths.out}: holds this sweep already; use --resume to continue it or --fresh")
        return lambda: None
    if storage.has_entries(paths.out):
        raise SweepSetupError(f"{paths.out}: exists and is not a sweep output; use another output or --fresh")
    existed = storage.exists(paths.out)
    storage.write_text(paths.spec_copy, spec_text)
    return (lambda: storage.delete(paths.spec_copy)) if existed else (lambda: storage.delete_tree(paths.out))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_datasets(spec: SweepSpec, *, skip_corrupt: bool = False) -> None:
    """Load (build, or check and decode) every dataset, check the objective's OOD names, and load
    each named pretrained backbone once into its model."""
    for d in spec.datasets:
        data = load_benchmark(d.benchmark, root=spec.data_root, skip_corrupt=skip_corrupt)
        defaults = trial_defaults(spec, d)
        check_precision(spec, d.benchmark, defaults.get("mixed_precision", "no"))
        if defaults.get("weights"):
            try:
                create_model(defaults.get("backbone", "small_cnn"), num_classes=data.num_classes,
                             weights=Path(defaults["weights"]).expanduser())
            except WeightsError as exc:
                raise SweepSetupError(f"datasets ({d.benchmark}): trial.weights: {exc}") from None
        _check_outliers(spec, d.benchmark, data, skip_corrupt)
        names = ood_selection_names([(o.name, o.group) for o in data.ood])
        if spec.objective.ood not in names:
            raise SweepSetupError(
                f"objective.ood: {spec.objective.ood!r} is neither a group nor a set of {d.benchmark} "
                f"({expected_one_of(sorted(names), spec.objective.ood)})"
            )


def _check_outliers(spec: SweepSpec, benchmark: str, data, skip_corrupt: bool) -> None:
    """The oe/mixoe baselines' outliers are readable and share no image with the dataset."""
    from ascood.data.outliers import outliers_for
    from ascood.method.registry import METHODS

    users = [b.method for b in spec.baselines if METHODS[b.method].external_outliers]
    if not users or spec.outliers is None:
        return
    root = Path(spec.outliers_root).expanduser() if spec.outliers_root else None
    try:
        outliers_for(data, spec.outliers, image_root=root, skip_corrupt=skip_corrupt)
    except DatasetError as exc:
        raise SweepSetupError(f"outliers (baselines {', '.join(users)} on {benchmark}): {exc}") from None


def check_precision(spec: SweepSpec, benchmark: str, mixed_precision: str, *, gpu_bf16: bool | None = None) -> None:
    """bf16 on GPUs that lack it (before Ampere) is refused before any trial. `gpu_bf16`: whether
    this machine's GPU supports it (default: asks CUDA; None on a machine without a GPU, such as a
    cluster's head node, where each trial then refuses it alone)."""
    if mixed_precision != "bf16" or spec.resources.gpus_per_process == 0:
        return
    if gpu_bf16 is None:
        import torch

        gpu_bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None
    if gpu_bf16 is False:
        raise SweepSetupError(f"datasets ({benchmark}): trial.mixed_precision: bf16 is not supported by this "
                              "machine's GPU; use fp16 or no")
