"""Input-perturbation scorers: ODIN and the paper's i-ODIN."""

from __future__ import annotations

from torch import Tensor, nn

from ascood.scorers import functional as Fs
from ascood.scorers.base import InputScorer


class ODIN(InputScorer):
    """ODIN (Liang et al., 2018): temperature T and a signed-gradient input step of size ε."""

    name = "odin"

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014):
        self.temperature = temperature
        self.epsilon = epsilon

    def params(self) -> dict:
        return {"temperature": self.temperature, "epsilon": self.epsilon}

    def postprocess_batch(self, model: nn.Module, x: Tensor, std: Tensor) -> Tensor:
        return Fs.odin(model, x, self.temperature, self.epsilon, std)


class IODIN(ODIN):
    """i-ODIN (ASCOOD): ODIN's step applied only to the k input entries of largest |∇| (k = 1)."""

    name = "iodin"

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014, k: int = 1):
        super().__init__(temperature, epsilon)
        self.k = k

    def params(self) -> dict:
        return {**super().params(), "k": self.k}

    def postprocess_batch(self, model: nn.Module, x: Tensor, std: Tensor) -> Tensor:
        return Fs.odin(model, x, self.temperature, self.epsilon, std, top_k=self.k)
