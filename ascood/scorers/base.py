"""The scorer interface, after OpenOOD's postprocessors: `setup` once, then `postprocess`.

A scorer is built from named parameters (its `defaults`, overridden per instance); `grid` lists
the values the validation search (`ascood.scorers.search`) tries. Scores: higher = more ID.

Device rule: `Outputs` live on the CPU (the evaluator gathers every forward pass there), and so
does every scorer's state. `setup` keeps what it fits on the CPU and copies what it needs of the
head (fc weight and bias detached, `feature_norm`, `sigma`), never a reference to the head itself,
which lives on the accelerator and may move or change afterwards; `postprocess` never touches the
head. Mixing the two devices is what fails ("Expected all tensors to be on the same device").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class Outputs:
    """What one forward pass over a split gives every logit/feature scorer.

    `features` are the pooled features *before* the head's normalization (what OpenOOD's feature
    hooks see on the ASCOOD network).
    """

    logits: Tensor
    features: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Scorer:
    """A post-hoc OOD score, higher = more in-distribution."""

    name: ClassVar[str]
    needs_input: ClassVar[bool] = False
    needs_train: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    grid: ClassVar[dict[str, list]] = {}

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"scorer {self.name}: unknown parameter(s) {sorted(unknown)}")
        self.p: dict[str, Any] = {**self.defaults, **params}

    def params(self) -> dict[str, Any]:
        return dict(self.p)

    def setup(self, train: Outputs | None, head: nn.Module | None) -> None:
        """Fit what the score needs from ID training outputs and the model's head (if anything)."""

    def postprocess(self, outputs: Outputs) -> Tensor:
        raise NotImplementedError

    def grid_scores(
        self, train: Outputs | None, head: nn.Module | None, sets: list[Outputs], points: list[dict]
    ) -> list[list[Tensor]]:
        """Per grid point (in `points` order), the scores of every set (in `sets` order): a scorer
        set up once per point; subclasses share work between points."""
        out = []
        for pt in points:
            scorer = type(self)(**{**self.p, **pt})
            scorer.setup(train, head)
            out.append([scorer.postprocess(o) for o in sets])
        return out

    @classmethod
    def grid_points(cls) -> list[dict[str, Any]]:
        """Every combination of the search grid (one point, the defaults, when there is no grid)."""
        if not cls.grid:
            return [{}]
        keys = list(cls.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(cls.grid[k] for k in keys))]


class InputScorer(Scorer):
    """A score that needs the input itself (extra forward/backward passes), e.g. ODIN."""

    needs_input = True
    needs_reference: ClassVar[bool] = False  # fitted on ID validation inputs (`reference_pair`, `set_reference`)

    def postprocess_batch(self, model: nn.Module, x: Tensor, std: Tensor) -> Tensor:
        raise NotImplementedError

    def postprocess_grid(self, model: nn.Module, x: Tensor, std: Tensor, points: list[dict[str, Any]]) -> list[Tensor]:
        """Scores of one batch at every grid point (subclasses share work between points)."""
        return [type(self)(**{**self.p, **pt}).postprocess_batch(model, x, std) for pt in points]
