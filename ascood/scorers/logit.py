"""Scorers that need only the logits of the shared forward pass."""

from __future__ import annotations

from torch import Tensor

from ascood.scorers import functional as Fs
from ascood.scorers.base import Outputs, Scorer


class MSP(Scorer):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017)."""

    name = "msp"

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.msp(outputs.logits)


class MaxLogit(Scorer):
    """Maximum logit (Hendrycks et al., 2022)."""

    name = "maxlogit"

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.max_logit(outputs.logits)


class Energy(Scorer):
    """Negative free energy T·logsumexp(z/T) (Liu et al., 2020)."""

    name = "energy"
    defaults = {"temperature": 1.0}

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.energy(outputs.logits, self.p["temperature"])


class GEN(Scorer):
    """Generalized entropy over the top-M probabilities (Liu et al., CVPR 2023)."""

    name = "gen"
    defaults = {"gamma": 0.1, "top_m": 100}
    grid = {"gamma": [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0], "top_m": [10, 50, 100, 200, 500, 1000]}

    def postprocess(self, outputs: Outputs) -> Tensor:
        return Fs.gen(outputs.logits, self.p["gamma"], self.p["top_m"])
