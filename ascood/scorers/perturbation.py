"""Input-perturbation scorers: ODIN and the paper's i-ODIN."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ascood.scorers import functional as Fs
from ascood.scorers.base import InputScorer

ODIN_TEMPERATURES = [1.0, 10.0, 100.0, 1000.0]
ODIN_EPSILONS = [round(0.0014 * i, 4) for i in range(1, 8)]  # 0.0014, …, 0.0098: the authors grid


class ODIN(InputScorer):
    """ODIN (Liang et al., 2018): temperature T and a signed-gradient input step of size ε."""

    name = "odin"
    defaults = {"temperature": 1000.0, "epsilon": 0.0014}
    grid = {"temperature": ODIN_TEMPERATURES, "epsilon": ODIN_EPSILONS}

    def top_k(self) -> int | None:
        return None

    def postprocess_batch(self, model: nn.Module, x: Tensor, std: Tensor) -> Tensor:
        return Fs.odin(model, x, self.p["temperature"], self.p["epsilon"], std, top_k=self.top_k())

    def postprocess_grid(self, model: nn.Module, x: Tensor, std: Tensor, points: list[dict]) -> list[Tensor]:
        """The step's direction depends on T only: one forward for every temperature, one backward
        per temperature, then one forward per ε (the reference runs a forward, a backward and a
        forward per grid point)."""
        temps = [pt.get("temperature", self.p["temperature"]) for pt in points]
        steps = Fs.odin_perturbations(model, x, temps, std, self.top_k())
        out = []
        for pt, t in zip(points, temps, strict=True):
            eps = pt.get("epsilon", self.p["epsilon"])
            with torch.no_grad():
                out.append((model(x + eps * steps[t]) / t).softmax(dim=1).amax(dim=1))
        return out


class IODIN(ODIN):
    """i-ODIN (ASCOOD): ODIN's step applied only to the k input entries of largest |∇| (k = 1)."""

    name = "iodin"
    defaults = {"temperature": 1000.0, "epsilon": 0.0014, "k": 1}
    grid = {"temperature": ODIN_TEMPERATURES, "epsilon": ODIN_EPSILONS}

    def top_k(self) -> int | None:
        return self.p["k"]
