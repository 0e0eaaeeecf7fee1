"""Resource maths of a sweep: what one trial asks Ray for, and how many trials fit at once."""

from __future__ import annotations

import math

from ascood.sweep.errors import SweepSetupError
from ascood.sweep.spec import SweepSpec

DRIVER_CPUS = 0.1  # a multi-process trial's own actor only waits on its Ray Train workers


def trial_resources(spec: SweepSpec) -> tuple[dict, float]:
    """(Tune resources of a trial's own actor, CPUs the whole trial needs)."""
    r = spec.resources
    if r.processes_per_trial == 1:
        res = {"cpu": r.cpus_per_process, "gpu": r.gpus_per_process}
        return res, r.cpus_per_process
    return {"cpu": DRIVER_CPUS}, DRIVER_CPUS + r.processes_per_trial * r.cpus_per_process


def concurrency(spec: SweepSpec, cluster_cpus: float, cluster_gpus: float) -> int:
    """Concurrent trials that fit: never more than the sweep allows, never starving Train workers."""
    _, cpus = trial_resources(spec)
    r = spec.resources
    if cpus > cluster_cpus + 1e-9:
        raise SweepSetupError(
            f"resources: a trial needs {cpus:g} CPUs ({r.processes_per_trial} processes × {r.cpus_per_process:g}"
            f"{' + driver' if r.processes_per_trial > 1 else ''}), the cluster has {cluster_cpus:g}"
        )
    fit = math.floor((cluster_cpus + 1e-9) / cpus)
    gpus = r.processes_per_trial * r.gpus_per_process
    if gpus > 0:
        if gpus > cluster_gpus + 1e-9:
            raise SweepSetupError(f"resources: a trial needs {gpus:g} GPUs, the cluster has {cluster_gpus:g}")
        fit = min(fit, math.floor((cluster_gpus + 1e-9) / gpus))
    return max(1, min(r.max_concurrent_trials, fit))
