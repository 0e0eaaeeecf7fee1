"""Post-hoc OOD scorers: one class per score, `setup` then `postprocess`, each with its grid."""

from __future__ import annotations

from typing import Any

from ascood.choices import one_of
from ascood.scorers.adascale import AdaSCALE
from ascood.scorers.base import InputScorer, Outputs, Scorer
from ascood.scorers.feature import ASH, KNN, MDS, RMDS, SCALE, NNGuide, ReAct, Relation, ViM
from ascood.scorers.logit import GEN, MSP, Energy, MaxLogit
from ascood.scorers.newer import DICE, FDBD, NCI, NECO, SHE, VRA, GradNorm, KLMatching, MahalanobisPP
from ascood.scorers.perturbation import IODIN, ODIN

SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (
        MSP, MaxLogit, Energy, GEN, ODIN, IODIN, ReAct, ASH, SCALE, KNN, MDS, RMDS, ViM, Relation, NNGuide,
        FDBD, NCI, NECO, VRA, GradNorm, DICE, SHE, KLMatching, MahalanobisPP, AdaSCALE,
    )
}


def build_scorer(name: str, **params: Any) -> Scorer:
    return SCORERS[one_of(name, SCORERS, "scorer")](**params)


def build_scorers(names: tuple[str, ...] | list[str], overrides: dict[str, dict] | None = None) -> list[Scorer]:
    overrides = overrides or {}
    return [build_scorer(n, **overrides.get(n, {})) for n in names]


__all__ = [
    "ASH", "DICE", "FDBD", "GEN", "IODIN", "KNN", "MDS", "MSP", "NCI", "NECO", "ODIN", "RMDS", "SCALE", "SCORERS", "SHE",
    "VRA", "AdaSCALE", "Energy", "GradNorm", "InputScorer", "KLMatching", "MahalanobisPP", "MaxLogit", "NNGuide",
    "Outputs", "ReAct", "Relation", "Scorer", "ViM", "build_scorer", "build_scorers",
]
