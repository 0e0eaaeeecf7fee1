"""AdaSCALE (Regmi, 2025), the activation-scaling "A" variant: SCALE with a per-sample percentile
set by how much the largest activations move under a small input perturbation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ascood.method.normalization import normalize_features
from ascood.scorers import functional as Fs
from ascood.scorers import functional_newer as Fn
from ascood.scorers.base import InputScorer, Outputs

PERCENTILE_LOWS = [60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
PERCENTILE_HIGHS = [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 99.0]


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Backbone and head of an `OODNet`, or of the evaluator's `Fp32Logits` wrapper around one."""
    inner = getattr(model, "model", model)
    return inner.backbone, inner.head


def _features(backbone: nn.Module, x: Tensor) -> Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return backbone(x.float())


class AdaSCALE(InputScorer):
    """AdaSCALE-A (Regmi, 2025), as OpenOOD's "adascale_a".

    The input moves by ε·sign(∇ₓ z_ŷ) (ε = 0.5 in normalized-input units, `std` unused) on the
    fraction `o` of its entries with the *smallest* |∇|; Q′ = Σ_{top-k1 of h} relu(h̃) + λ·Σ_{top-k2
    of h} |h − h̃| (k1 = 5 %, k2 = 1 % of the features, at least one: OpenOOD's assignment; the
    author's repository now swaps them in one of its two places); the sample's percentile is
    p_min + (1 − F(Q′))·(p_max − p_min), F the empirical CDF of Q′ over `num_samples` ID inputs;
    then SCALE's factor r = Σ relu(h) / Σ top-k relu(h) at that percentile, energy of fc(h·eʳ)
    (`feature_path="fc"`, as SCALE; "head" goes through the trained head, where z-scoring undoes
    the scaling). Grid: the 36 pairs p_min < p_max of OpenOOD's sweep, k1, k2, λ, o fixed.

    F needs ID *inputs* (OpenOOD: 5000 ID validation images), which `setup` does not get: the
    evaluator passes them through `reference_pair` and `set_reference` (ID validation, every
    process's share gathered) before it scores; scoring without a reference is refused.
    """

    name = "adascale"
    defaults = {
        "p_min": 75.0, "p_max": 85.0, "k1": 5.0, "k2": 1.0, "lmbda": 10.0, "o": 0.05, "epsilon": 0.5,
        "num_samples": 5000, "feature_path": "fc",
    }
    grid = {"p_min": PERCENTILE_LOWS, "p_max": PERCENTILE_HIGHS}

    def __init__(self, **params):
        super().__init__(**params)
        self.reference: tuple[Tensor, Tensor] | None = None  # ID (h, h̃) on the CPU

    @classmethod
    def grid_points(cls) -> list[dict]:
        """OpenOOD's sweep: every (p_min, p_max) of the two lists with p_min < p_max (36)."""
        return [pt for pt in super().grid_points() if pt["p_min"] < pt["p_max"]]

    def _perturbation(self, model: nn.Module, x: Tensor, params: dict) -> tuple[Tensor, Tensor]:
        """Features of x and of its perturbed copy (both detached)."""
        backbone, head = _parts(model)
        with torch.enable_grad():
            x_req = x.detach().float().requires_grad_(True)
            h = _features(backbone, x_req)
            with torch.autocast(x.device.type, enabled=False):
                logits = head(h)
            top = logits.gather(1, logits.detach().argmax(dim=1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(top, x_req)
        step = Fn.least_salient_step(grad, params["o"], params["epsilon"])
        with torch.no_grad():
            return h.detach(), _features(backbone, x.float() + step)

    needs_reference = True

    def reference_pair(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """(h, h̃) of one batch of ID inputs: what the reference F is fitted on."""
        return self._perturbation(model, x, self.p)

    def set_reference(self, h: Tensor, ht: Tensor) -> AdaSCALE:
        """F from the (h, h̃) of ID inputs: `num_samples` rows kept at random (seeded), on the CPU."""
        keep = torch.randperm(len(h), generator=torch.Generator().manual_seed(0))[: int(self.p["num_samples"])]
        self.reference = (h.cpu()[keep].double(), ht.cpu()[keep].double())
        self._reference_o = (self.p["o"], self.p["epsilon"])
        return self

    def fit_reference(self, model: nn.Module, batches: Iterable[Tensor], std: Tensor | None = None) -> AdaSCALE:
        """Fit F on batches of ID inputs in one process (the evaluator gathers across processes)."""
        pairs = [self.reference_pair(model, x) for x in batches]
        return self.set_reference(torch.cat([h.cpu() for h, _ in pairs]), torch.cat([ht.cpu() for _, ht in pairs]))

    def _q(self, h: Tensor, ht: Tensor, params: dict) -> Tensor:
        d = h.shape[1]
        return Fn.oodness(h, ht, Fn.top_count(d, params["k1"]), Fn.top_count(d, params["k2"]), params["lmbda"])

    def _percent(self, h: Tensor, ht: Tensor, params: dict) -> Tensor:
        """1 − F(Q′) per sample, on h's device."""
        if (params["o"], params["epsilon"]) != self._reference_o:
            raise ValueError("adascale: the reference was fitted with another perturbation (o, epsilon)")
        ref = self._q(*self.reference, params).sort().values
        return (1.0 - Fn.ecdf(ref, self._q(h, ht, params).cpu())).to(h.device)

    def _energy(self, model: nn.Module, h: Tensor, percent: Tensor, params: dict) -> Tensor:
        _, head = _parts(model)
        percentile = params["p_min"] + percent * (params["p_max"] - params["p_min"])
        scaled = h.double() * torch.exp(Fn.adaptive_scale(h, percentile))[:, None]
        with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
            w, b = head.fc.weight.double(), None if head.fc.bias is None else head.fc.bias.double()
            if params["feature_path"] == "fc":
                logits = F.linear(scaled, w, b)
            elif params["feature_path"] == "head":
                logits = F.linear(normalize_features(scaled, head.feature_norm, head.sigma), w, b)
            else:
                raise ValueError(f"adascale feature_path: expected fc or head, got {params['feature_path']!r}")
        return Fs.energy_from(logits).float()

    def postprocess_batch(self, model: nn.Module, x: Tensor, std: Tensor) -> Tensor:
        return self.postprocess_grid(model, x, std, [{}])[0]

    def postprocess_grid(self, model: nn.Module, x: Tensor, std: Tensor, points: list[dict]) -> list[Tensor]:
        """One backward and one perturbed forward per batch serve every grid point (the
        perturbation does not depend on the percentiles)."""
        params = [type(self)(**{**self.p, **pt}).p for pt in points]
        if self.reference is None:
            raise ValueError("adascale: no ID reference fitted (set_reference on ID validation inputs first)")
        perturbed: dict[tuple, tuple[Tensor, Tensor]] = {}
        out = []
        for p in params:
            key = (p["o"], p["epsilon"])
            if key not in perturbed:
                perturbed[key] = self._perturbation(model, x, p)
            h, ht = perturbed[key]
            out.append(self._energy(model, h, self._percent(h, ht, p), p))
        return out

    def postprocess(self, outputs: Outputs) -> Tensor:
        raise TypeError("adascale needs the input: use postprocess_batch")
