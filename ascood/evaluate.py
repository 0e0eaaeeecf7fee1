"""OOD evaluation of a model on a benchmark: one forward pass per split feeds every logit scorer.

Each OOD set is scored alone against the whole ID set of the same split (val or test); group
rows (near/far/…) are plain means of the per-set metrics, computed by `results.group_means`.
Input-perturbation scorers (ODIN, i-ODIN) are the only ones that run extra passes.

Precision: everything here runs in fp32 through the model's own modules (`backbone` → `head`),
never through its `forward`, which Accelerate's mixed-precision wrapper keeps after unwrapping:
training's evaluation and `ascood-eval` of the same checkpoint then give the same scores. ODIN's
input gradients at T = 1000 (about 1e-6) underflow fp16, and a bf16 or TF32 step rounds away
i-ODIN's one-entry perturbation, so input-gradient scorers also run with TF32 off.

Devices and processes: forward passes run on every process over its shard; outputs are
gathered to the CPU, where scorers keep their fitted state. Input-gradient scorers need every
process (their passes are sharded); the other scorers, which may hold an N×M distance block, run
on the main process only, which broadcasts the results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ascood.data import BenchmarkData
from ascood.data.loading import Preprocess, eval_loader
from ascood.metrics import OODMetrics, accuracy, ood_metrics
from ascood.models.fold import fold_batchnorm
from ascood.scorers import InputScorer, Outputs, Scorer

EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class SetResult:
    ood_set: str
    ood_group: str
    scorer: str
    n_ood: int
    metrics: OODMetrics | None  # None when the scorer failed (see `error`)
    error: str | None = None


@dataclass(frozen=True)
class SplitResult:
    split: str
    id_accuracy: float
    n_id: int
    sets: list[SetResult] = field(default_factory=list)


class Fp32Logits(nn.Module):
    """The model's logits from its own modules, in fp32: what every input-gradient scorer calls.
    With `backbone`, that module (the model's, BatchNorm folded) stands in for the model's own."""

    def __init__(self, model: nn.Module, backbone: nn.Module | None = None):
        super().__init__()
        self.model = model if backbone is None else _Swapped(model, backbone)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.model.head(self.model.backbone(x.float()))


class _Swapped(nn.Module):
    def __init__(self, model: nn.Module, backbone: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, model.head


@contextmanager
def no_tf32() -> Iterator[None]:
    """IEEE fp32 convolutions and matmuls for the duration (restored after)."""
    conv, matmul = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = conv, matmul


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters not requiring grad: an input gradient then keeps no weight-gradient buffers."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def chunks(x: Tensor, size: int) -> list[Tensor]:
    return list(x.split(size)) if size < len(x) else [x]


def grad_chunk(batch_size: int, method: str, device: torch.device) -> int | None:
    """Samples per input-gradient pass of a run: on a GPU what its training step already holds
    (ID + outliers for ASCOOD: 2B samples with weight gradients, more than a frozen-weight input
    gradient needs); on the CPU, where host memory is not the limit, the whole evaluation batch."""
    if device.type != "cuda":
        return None
    return 2 * batch_size if method == "ascood" else batch_size


class Evaluator:
    """Holds the prepared (sharded, device-placed) loaders of every evaluated set of a run."""

    def __init__(
        self,
        data: BenchmarkData,
        accelerator: Accelerator,
        *,
        batch_size: int,
        num_workers: int = 0,
        splits: tuple[str, ...] = EVAL_SPLITS,
        fpr_convention: str = "openood",
        channels_last: bool = False,
        grad_batch_size: int | None = None,
        fold_batchnorm: bool = True,
    ):
        """`grad_batch_size`: samples per input-gradient pass (default `batch_size`; see `grad_chunk`).
        `fold_batchnorm`: input-gradient passes run through a copy of the backbone with BatchNorm
        folded into the convolutions (`ascood.models.fold`); False runs the model's own modules."""
        self.fold_batchnorm = fold_batchnorm
        self._held: list | None = None  # [model, its input network once built], see `input_net`
        self.data = data
        self.accelerator = accelerator
        self.splits = splits
        self.fpr_convention = fpr_convention
        self.batch_size, self.num_workers = batch_size, num_workers
        self.grad_batch_size = grad_batch_size or batch_size
        self.pin_memory = accelerator.device.type == "cuda"
        self.preprocess = Preprocess(data, channels_last)
        self.std = torch.tensor(data.std, dtype=torch.float32, device=accelerator.device)

        def prep(split) -> DataLoader:
            return accelerator.prepare_data_loader(eval_loader(split, batch_size, num_workers, pin_memory=self.pin_memory))

        self.loaders: dict[tuple[str, str], DataLoader] = {}
        for split in splits:
            self.loaders[(split, "id")] = prep(data.id_split(split))
            for o in data.ood_sets(split):
                self.loaders[(split, o.name)] = prep(getattr(o, split))

    def outputs(self, model: nn.Module, loader: DataLoader) -> Outputs:
        logits, feats, labels = [], [], []
        with torch.no_grad(), torch.autocast(self.accelerator.device.type, enabled=False):
            for images, y in loader:
                lg, h = model.forward_with_features(self.preprocess.eval(images))
                lg, h, y = self.accelerator.gather_for_metrics((lg.float(), h.float(), y))
                logits.append(lg.cpu())
                feats.append(h.cpu())
                labels.append(y.cpu())
        return Outputs(torch.cat(logits), torch.cat(feats), torch.cat(labels))

    def input_scores(self, scorer: InputScorer, model: nn.Module, loader: DataLoader) -> Tensor:
        (scores,) = self._input_passes(model, loader, lambda net, x: [scorer.postprocess_batch(net, x, self.std)])
        return torch.cat(scores)

    def input_grid_scores(
        self, scorer: InputScorer, model: nn.Module, key: tuple[str, str], points: list[dict]
    ) -> list[np.ndarray]:
        per_point = self._input_passes(
            model, self._loader(key), lambda net, x: scorer.postprocess_grid(net, x, self.std, points)
        )
        return [torch.cat(a).numpy() for a in per_point]

    @contextmanager
    def input_net(self, model: nn.Module) -> Iterator[None]:
        """Every input pass over `model` for the duration shares one network: its folded copy is
        built at the first pass, not once per set (0.24 s for a ResNet-50), and not at all when
        no input scorer runs. The model must not change meanwhile."""
        self._held = [model, None]
        try:
            yield
        finally:
            self._held = None

    def _input_net(self, model: nn.Module) -> Fp32Logits:
        """Called with the parameters frozen, so that the copy's stay frozen."""
        held = self._held is not None and self._held[0] is model
        if held and self._held[1] is not None:
            return self._held[1]
        net = Fp32Logits(model, fold_batchnorm(model.backbone) if self.fold_batchnorm else None)
        if held:
            self._held[1] = net
        return net

    def _input_passes(self, model: nn.Module, loader: DataLoader, score) -> list[list[Tensor]]:
        """`score(net, x)` (a list of score tensors) over every batch in chunks of `grad_batch_size`,
        with the fp32 logits path, parameters frozen and TF32 off; gathered per list entry."""
        out = None
        with frozen(model), no_tf32():
            net = self._input_net(model)
            for images, _ in loader:
                x = self.preprocess.eval(images)
                parts = [score(net, c) for c in chunks(x, self.grad_batch_size)]
                batch = [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
                out = out or [[] for _ in batch]
                for acc, sc in zip(out, batch, strict=True):
                    acc.append(self.accelerator.gather_for_metrics(sc.float()).cpu())
        return out or [[torch.zeros(0)]]

    def all_outputs(self, model: nn.Module, *, train: bool) -> dict[tuple[str, str], Outputs]:
        """One forward pass per evaluated set (and over ID train when a scorer fits on it)."""
        keys = list(self.loaders)
        if train:
            keys.append(("train", "id"))
        return {key: self.outputs(model, self._loader(key)) for key in keys}

    def cached_outputs(self, model: nn.Module, path: Path) -> dict[tuple[str, str], Outputs]:
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            return {tuple(k.split("/", 1)): Outputs(*v) for k, v in state.items()}
        outputs = self.all_outputs(model, train=True)
        if self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save({f"{s}/{n}": (o.logits, o.features, o.labels) for (s, n), o in outputs.items()}, tmp)
            tmp.replace(path)
        return outputs

    def _loader(self, key: tuple[str, str]) -> DataLoader:
        if key not in self.loaders:  # ID train, un-augmented, only when a scorer needs it
            self.loaders[key] = self.accelerator.prepare_data_loader(
                eval_loader(self.data.train, self.batch_size, self.num_workers, pin_memory=self.pin_memory)
            )
        return self.loaders[key]

    def score(self, scorer: Scorer, model: nn.Module, key: tuple[str, str], outputs: dict) -> Tensor:
        if scorer.needs_input:
            return self.input_scores(scorer, model, self._loader(key))
        return scorer.postprocess(outputs[key])

    def fit(self, scorer: Scorer, model: nn.Module, outputs: dict, *, search: bool) -> Scorer:
        """Set the scorer up; with `search`, first pick its grid point on validation data only.

        The search scores ID-val against every validation OOD set pooled, by AUROC (OpenOOD's
        automatic parameter search); test sets are never looked at.
        """
        return self.fit_with_scores(scorer, model, outputs, search=search)[0]

    def fit_with_scores(
        self, scorer: Scorer, model: nn.Module, outputs: dict, *, search: bool
    ) -> tuple[Scorer, dict[tuple[str, str], np.ndarray]]:
        """`fit`, and the validation scores at the chosen grid point of an input scorer's search:
        its input passes over the validation sets need not run again (the grid's scores at a
        point are that point's scores: `postprocess_grid` and `postprocess_batch` agree)."""
        train = outputs.get(("train", "id"))
        reference = self._reference(scorer, model) if scorer.needs_input and scorer.needs_reference else None
        if reference is not None:
            scorer.set_reference(*reference)
        if not (search and scorer.grid):
            scorer.setup(train, model.head)
            return scorer, {}
        val_ood = [("val", o.name) for o in self.data.ood_sets("val")]

        points = type(scorer).grid_points()
        if scorer.needs_input:  # every grid point from one pass over each validation set
            grid_id = self.input_grid_scores(scorer, model, ("val", "id"), points)
            grid_ood = [self.input_grid_scores(scorer, model, k, points) for k in val_ood]

            def auroc(i: int) -> float:
                ood = np.concatenate([g[i] for g in grid_ood])
                return self._grid_auroc(grid_id[i], ood)
        else:  # every grid point at once: a scorer may share work between points (KNN: one top-k)
            grid = scorer.grid_scores(train, model.head, [outputs[k] for k in [("val", "id"), *val_ood]], points)

            def auroc(i: int) -> float:
                id_scores, *ood = (t.numpy() for t in grid[i])
                return self._grid_auroc(id_scores, np.concatenate(ood))

        i = select_grid_point(len(points), auroc)
        chosen = type(scorer)(**{**scorer.params(), **points[i]})
        if reference is not None:
            chosen.set_reference(*reference)
        chosen.setup(train, model.head)
        known = {}
        if scorer.needs_input:
            known = {("val", "id"): grid_id[i], **{k: g[i] for k, g in zip(val_ood, grid_ood, strict=True)}}
        return chosen, known

    def _reference(self, scorer: InputScorer, model: nn.Module) -> tuple[Tensor, Tensor]:
        """The (h, h̃) pairs of every ID validation input that an input scorer's reference is fitted
        on (AdaSCALE's CDF), through the same fp32 path as its scores, gathered from every process."""
        (h, ht) = self._input_passes(model, self._loader(("val", "id")), lambda net, x: list(scorer.reference_pair(net, x)))
        return torch.cat(h), torch.cat(ht)

    def _grid_auroc(self, id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
        """A grid point whose scores are not all finite is never chosen."""
        if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
            return -np.inf
        return ood_metrics(id_scores, ood_scores, fpr_convention=self.fpr_convention).auroc

    def evaluate(
        self, model: nn.Module, scorers: list[Scorer], *, search: bool = False, cache: Path | None = None,
    ) -> tuple[list[SplitResult], list[Scorer]]:
        """Evaluate the (unwrapped) model on every split; returns the results and the scorers as
        used (with searched parameters; fitted on the main process). Every process returns the
        same results.

        With `cache`, the forward-pass outputs of every set (ID train included) are read from that
        file, or computed once and written there: later evaluations of the same checkpoint run no
        inference for logit/feature scorers.
        """
        was_training = model.training
        model.eval()
        try:
            with self.input_net(model):
                return self._evaluate(model, scorers, search=search, cache=cache)
        finally:
            model.train(was_training)

    def _evaluate(
        self, model: nn.Module, scorers: list[Scorer], *, search: bool, cache: Path | None,
    ) -> tuple[list[SplitResult], list[Scorer]]:
        if cache is not None:
            outputs = self.cached_outputs(model, cache)
        else:
            outputs = self.all_outputs(model, train=any(s.needs_train for s in scorers))
        here = self.accelerator.num_processes == 1 or self.accelerator.is_main_process
        keys = [(split, name) for split in self.splits
                for name in ("id", *(o.name for o in self.data.ood_sets(split)))]
        used, errors, scores = [], {}, {}
        for s in scorers:
            if not (s.needs_input or here):
                used.append(s)
                continue
            known = {}
            try:
                s, known = self.fit_with_scores(s, model, outputs, search=search)
            except Exception as exc:  # a degenerate fit fails this scorer only
                errors[s.name] = _reason(s, exc)
            used.append(s)
            for key in keys:
                scores[(s.name, key)] = self._checked(s, model, key, outputs, errors, known.get(key))
        results = [self._split(split, used, outputs, scores, errors) for split in self.splits] if here else None
        if self.accelerator.num_processes > 1:
            shared = broadcast_object_list([results, [u.params() for u in used]])
            results, params = shared
            used = [u if here else type(u)(**p) for u, p in zip(used, params, strict=True)]
        return results, used

    def _split(
        self, split: str, scorers: list[Scorer], outputs: dict, scores: dict, errors: dict[str, str]
    ) -> SplitResult:
        """Metrics of every scorer on every OOD set of `split`. A scorer that failed, or gave a NaN
        or infinite score to any sample, gets rows without metrics and the reason; the others go on."""
        id_out = outputs[(split, "id")]
        acc = accuracy(id_out.logits.argmax(dim=1).numpy(), id_out.labels.numpy())
        result = SplitResult(split, acc, len(id_out.labels))
        for o in self.data.ood_sets(split):
            for s in scorers:
                b = scores.get((s.name, (split, o.name)))
                if s.name in errors:
                    result.sets.append(SetResult(o.name, o.group, s.name, 0 if b is None else len(b), None,
                                                 errors[s.name]))
                    continue
                m = ood_metrics(scores[(s.name, (split, "id"))], b, fpr_convention=self.fpr_convention)
                result.sets.append(SetResult(o.name, o.group, s.name, len(b), m))
        return result

    def _checked(
        self, scorer: Scorer, model: nn.Module, key: tuple[str, str], outputs: dict, errors: dict[str, str],
        known: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """The scorer's scores of one set (`known` when its search already computed them), or None
        (with the reason in `errors`) when it failed."""
        if scorer.name in errors:
            return None
        try:
            scores = known if known is not None else self.score(scorer, model, key, outputs).numpy()
        except Exception as exc:
            errors[scorer.name] = _reason(scorer, exc)
            return None
        bad = int((~np.isfinite(scores)).sum())
        if bad:
            errors[scorer.name] = f"{scorer.name}: {bad} of {scores.size} scores on {key[0]} {key[1]} are NaN or infinite"
        return scores


def _reason(scorer: Scorer, exc: Exception) -> str:
    return f"{scorer.name}: {type(exc).__name__}: {exc}".splitlines()[0][:300]


def select_grid_point(n: int, objective) -> int:
    """Index of the grid point with the highest objective (the first such on ties, in grid order)."""
    values = [objective(i) for i in range(n)]
    return int(np.argmax(values))
