"""Scorers that need only the logits of the shared forward pass."""

from __future__ import annotations

from torch import Tensor

from ascood.scorers import functional as Fs
from ascood.scorers.base import Outputs, Scorer


class MSP(Scorer):
    name = "msp"

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.msp(outputs.logits)


class MaxLogit(Scorer):
    name = "maxlogit"

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.max_logit(outputs.logits)


class Energy(Scorer):
    name = "energy"

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def params(self) -> dict:
        return {"temperature": self.temperature}

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.energy(outputs.logits, self.temperature)
