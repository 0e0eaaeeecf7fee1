"""The scorer interface, after OpenOOD's postprocessors: `setup` once, then `postprocess`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class Outputs:
    """What one forward pass over a split gives every logit/feature scorer."""

    logits: Tensor
    features: Tensor
    labels: Tensor


class Scorer:
    """A post-hoc OOD score, higher = more in-distribution."""

    name: ClassVar[str]
    needs_input: ClassVar[bool] = False

    def setup(self, train: Outputs | None = None) -> None:
        """Fit on ID training outputs when the score needs it (none of this issue's do)."""

    def params(self) -> dict[str, Any]:
        return {}

    def postprocess(self, outputs: Outputs) -> Tensor:
        raise NotImplementedError


class InputScorer(Scorer):
    """A score that needs the input itself (extra forward/backward passes), e.g. ODIN."""

    needs_input = True

    def postprocess_batch(self, model: nn.Module, x: Tensor, std: Tensor) -> Tensor:
        raise NotImplementedError
