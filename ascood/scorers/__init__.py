"""Post-hoc OOD scorers: one class per score, `setup` then `postprocess`."""

from __future__ import annotations

from ascood.scorers.base import InputScorer, Outputs, Scorer
from ascood.scorers.logit import MSP, Energy, MaxLogit
from ascood.scorers.perturbation import IODIN, ODIN

SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (MSP, MaxLogit, Energy, ODIN, IODIN)}


def build_scorers(
    names: tuple[str, ...], *, odin_temperature: float, odin_epsilon: float, iodin_k: int
) -> list[Scorer]:
    out: list[Scorer] = []
    for name in names:
        if name == "odin":
            out.append(ODIN(odin_temperature, odin_epsilon))
        elif name == "iodin":
            out.append(IODIN(odin_temperature, odin_epsilon, iodin_k))
        else:
            out.append(SCORERS[name]())
    return out


__all__ = ["IODIN", "MSP", "ODIN", "SCORERS", "Energy", "InputScorer", "MaxLogit", "Outputs", "Scorer", "build_scorers"]
