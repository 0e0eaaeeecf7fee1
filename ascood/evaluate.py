"""OOD evaluation of a model on a benchmark: one forward pass per split feeds every logit scorer.

Each OOD set is scored alone against the whole ID set of the same split (val or test); group
rows (near/far/…) are plain means of the per-set metrics, computed by `results.group_means`.
Input-perturbation scorers (ODIN, i-ODIN) are the only ones that run extra passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ascood.data import BenchmarkData
from ascood.data.loading import Preprocess, eval_loader
from ascood.metrics import OODMetrics, accuracy, ood_metrics
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
    ):
        self.data = data
        self.accelerator = accelerator
        self.splits = splits
        self.fpr_convention = fpr_convention
        self.batch_size, self.num_workers = batch_size, num_workers
        self.preprocess = Preprocess(data, channels_last)
        self.std = torch.tensor(data.std, dtype=torch.float32)

        def prep(split) -> DataLoader:
            return accelerator.prepare_data_loader(eval_loader(split, batch_size, num_workers))

        self.loaders: dict[tuple[str, str], DataLoader] = {}
        for split in splits:
            self.loaders[(split, "id")] = prep(data.id_split(split))
            for o in data.ood_sets(split):
                self.loaders[(split, o.name)] = prep(getattr(o, split))

    def outputs(self, model: nn.Module, loader: DataLoader) -> Outputs:
        logits, feats, labels = [], [], []
        with torch.no_grad():
            for images, y in loader:
                lg, h = model.forward_with_features(self.preprocess.eval(images))
                lg, h, y = self.accelerator.gather_for_metrics((lg.float(), h.float(), y))
                logits.append(lg.cpu())
                feats.append(h.cpu())
                labels.append(y.cpu())
        return Outputs(torch.cat(logits), torch.cat(feats), torch.cat(labels))

    def input_scores(self, scorer: InputScorer, model: nn.Module, loader: DataLoader) -> Tensor:
        scores = []
        for images, _ in loader:
            s = scorer.postprocess_batch(model, self.preprocess.eval(images), self.std)
            scores.append(self.accelerator.gather_for_metrics(s.float()).cpu())
        return torch.cat(scores)

    def input_grid_scores(
        self, scorer: InputScorer, model: nn.Module, key: tuple[str, str], points: list[dict]
    ) -> list[np.ndarray]:
        per_point: list[list[Tensor]] = [[] for _ in points]
        for images, _ in self._loader(key):
            scores = scorer.postprocess_grid(model, self.preprocess.eval(images), self.std, points)
            for acc, s in zip(per_point, scores, strict=True):
                acc.append(self.accelerator.gather_for_metrics(s.float()).cpu())
        return [torch.cat(a).numpy() for a in per_point]

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
                eval_loader(self.data.train, self.batch_size, self.num_workers)
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
        train = outputs.get(("train", "id"))
        if not (search and scorer.grid):
            scorer.setup(train, model.head)
            return scorer
        val_ood = [("val", o.name) for o in self.data.ood_sets("val")]

        points = type(scorer).grid_points()
        if scorer.needs_input:  # every grid point from one pass over each validation set
            grid_id = self.input_grid_scores(scorer, model, ("val", "id"), points)
            grid_ood = [self.input_grid_scores(scorer, model, k, points) for k in val_ood]

            def auroc(i: int) -> float:
                ood = np.concatenate([g[i] for g in grid_ood])
                return self._grid_auroc(grid_id[i], ood)
        else:
            def auroc(i: int) -> float:
                candidate = type(scorer)(**{**scorer.params(), **points[i]})
                candidate.setup(train, model.head)
                id_scores = self.score(candidate, model, ("val", "id"), outputs).numpy()
                ood_scores = np.concatenate([self.score(candidate, model, k, outputs).numpy() for k in val_ood])
                return self._grid_auroc(id_scores, ood_scores)

        best = points[select_grid_point(len(points), auroc)]
        chosen = type(scorer)(**{**scorer.params(), **best})
        chosen.setup(train, model.head)
        return chosen

    def _grid_auroc(self, id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
        """A grid point whose scores are not all finite is never chosen."""
        if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
            return -np.inf
        return ood_metrics(id_scores, ood_scores, fpr_convention=self.fpr_convention).auroc

    def evaluate(
        self, model: nn.Module, scorers: list[Scorer], *, search: bool = False, cache: Path | None = None,
    ) -> tuple[list[SplitResult], list[Scorer]]:
        """Evaluate the (unwrapped) model on every split; returns the results and the scorers as
        used (with searched parameters). Every process returns the same.

        With `cache`, the forward-pass outputs of every set (ID train included) are read from that
        file, or computed once and written there: later evaluations of the same checkpoint run no
        inference for logit/feature scorers.
        """
        was_training = model.training
        model.eval()
        try:
            if cache is not None:
                outputs = self.cached_outputs(model, cache)
            else:
                outputs = self.all_outputs(model, train=any(s.needs_train for s in scorers))
            used, errors = [], {}
            for s in scorers:
                try:
                    used.append(self.fit(s, model, outputs, search=search))
                except Exception as exc:  # a degenerate fit fails this scorer only
                    used.append(s)
                    errors[s.name] = f"{s.name}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            return [self._split(model, used, split, outputs, errors) for split in self.splits], used
        finally:
            model.train(was_training)

    def _split(
        self, model: nn.Module, scorers: list[Scorer], split: str, outputs: dict, errors: dict[str, str]
    ) -> SplitResult:
        """Metrics of every scorer on every OOD set of `split`. A scorer that fails, or gives a NaN
        or infinite score to any sample, gets rows without metrics and the reason; the others go on."""
        id_out = outputs[(split, "id")]
        acc = accuracy(id_out.logits.argmax(dim=1).numpy(), id_out.labels.numpy())
        result = SplitResult(split, acc, len(id_out.labels))
        errors = dict(errors)
        id_scores = {s.name: self._checked(s, model, (split, "id"), outputs, errors) for s in scorers}
        for o in self.data.ood_sets(split):
            for s in scorers:
                b = self._checked(s, model, (split, o.name), outputs, errors)
                if s.name in errors:
                    result.sets.append(SetResult(o.name, o.group, s.name, 0 if b is None else len(b), None,
                                                 errors[s.name]))
                    continue
                m = ood_metrics(id_scores[s.name], b, fpr_convention=self.fpr_convention)
                result.sets.append(SetResult(o.name, o.group, s.name, len(b), m))
        return result

    def _checked(
        self, scorer: Scorer, model: nn.Module, key: tuple[str, str], outputs: dict, errors: dict[str, str]
    ) -> np.ndarray | None:
        """The scorer's scores of one set, or None (with the reason in `errors`) when it failed."""
        if scorer.name in errors:
            return None
        try:
            scores = self.score(scorer, model, key, outputs).numpy()
        except Exception as exc:
            errors[scorer.name] = f"{scorer.name}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            return None
        bad = int((~np.isfinite(scores)).sum())
        if bad:
            errors[scorer.name] = f"{scorer.name}: {bad} of {scores.size} scores on {key[0]} {key[1]} are NaN or infinite"
        return scores


def select_grid_point(n: int, objective) -> int:
    """Index of the grid point with the highest objective (the first such on ties, in grid order)."""
    values = [objective(i) for i in range(n)]
    return int(np.argmax(values))
