"""OOD evaluation of a model on a benchmark: one forward pass per split feeds every logit scorer.

Each OOD set is scored alone against the whole ID set of the same split (val or test); group
rows (near/far/…) are plain means of the per-set metrics, computed by `results.group_means`.
Input-perturbation scorers (ODIN, i-ODIN) are the only ones that run extra passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ascood.data.loading import Normalizer, eval_loader
from ascood.data.registry import BenchmarkData
from ascood.metrics import OODMetrics, accuracy, ood_metrics
from ascood.scorers import InputScorer, Outputs, Scorer

EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class SetResult:
    ood_set: str
    ood_group: str
    scorer: str
    n_ood: int
    metrics: OODMetrics


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
        self.normalize = Normalizer(data.mean, data.std, channels_last)
        self.std = torch.tensor(data.std, dtype=torch.float32)

        def prep(split) -> DataLoader:
            return accelerator.prepare_data_loader(eval_loader(split, batch_size, num_workers))

        self.loaders: dict[tuple[str, str], DataLoader] = {}
        for split in splits:
            self.loaders[(split, "id")] = prep(data.id_split(split))
            for o in data.ood:
                self.loaders[(split, o.name)] = prep(getattr(o, split))

    def outputs(self, model: nn.Module, loader: DataLoader) -> Outputs:
        logits, feats, labels = [], [], []
        with torch.no_grad():
            for images, y in loader:
                lg, h = model.forward_with_features(self.normalize(images))
                lg, h, y = self.accelerator.gather_for_metrics((lg.float(), h.float(), y))
                logits.append(lg.cpu())
                feats.append(h.cpu())
                labels.append(y.cpu())
        return Outputs(torch.cat(logits), torch.cat(feats), torch.cat(labels))

    def input_scores(self, scorer: InputScorer, model: nn.Module, loader: DataLoader) -> Tensor:
        scores = []
        for images, _ in loader:
            s = scorer.postprocess_batch(model, self.normalize(images), self.std)
            scores.append(self.accelerator.gather_for_metrics(s.float()).cpu())
        return torch.cat(scores)

    def scores(self, scorers: list[Scorer], model: nn.Module, loader: DataLoader) -> tuple[Outputs, dict[str, Tensor]]:
        out = self.outputs(model, loader)
        result = {}
        for s in scorers:
            result[s.name] = self.input_scores(s, model, loader) if s.needs_input else s.postprocess(out)
        return out, result

    def evaluate(self, model: nn.Module, scorers: list[Scorer]) -> list[SplitResult]:
        """Evaluate the (unwrapped) model on every split; every process returns the same result."""
        was_training = model.training
        model.eval()
        try:
            return [self._split(model, scorers, split) for split in self.splits]
        finally:
            model.train(was_training)

    def _split(self, model: nn.Module, scorers: list[Scorer], split: str) -> SplitResult:
        id_out, id_scores = self.scores(scorers, model, self.loaders[(split, "id")])
        acc = accuracy(id_out.logits.argmax(dim=1).numpy(), id_out.labels.numpy())
        result = SplitResult(split, acc, len(id_out.labels))
        for o in self.data.ood:
            _, ood_scores = self.scores(scorers, model, self.loaders[(split, o.name)])
            for s in scorers:
                a, b = id_scores[s.name].numpy(), ood_scores[s.name].numpy()
                m = ood_metrics(a, b, fpr_convention=self.fpr_convention)
                result.sets.append(SetResult(o.name, o.group, s.name, len(b), m))
        return result
