"""The stages of a sweep, as data, and the one function that runs a stage on a dataset.

A stage is a name, whether the sweep file asks for it, and a plan: how many trials, what Tune's
param space holds besides the trial meta (the chosen candidates), and for a searched stage the
Optuna searcher and the scheduler. `run_stage` turns a plan into a Tuner (or restores the stage's
experiment after a crash) and runs it. Adding a stage is adding one `Stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from ascood import storage
from ascood.config import validate_config
from ascood.results import SETTING_COLUMNS, read_rows, with_status, write_results
from ascood.sweep import shared_output
from ascood.sweep.paths import SweepPaths, experiment_name
from ascood.sweep.progress import ProgressCallback, SweepProgress
from ascood.sweep.results_status import ResultsStatusCallback
from ascood.sweep.searcher import make_searcher
from ascood.sweep.spec import DatasetSpec, SweepSpec, grid_size, normalize_trial_keys, space_for, trial_defaults
from ascood.sweep.summary import best_search_trial, ranked_search_trials
from ascood.sweep.trainable import TrialMeta


@dataclass(frozen=True)
class StageContext:
    """What every stage of one sweep run shares."""

    spec: SweepSpec
    paths: SweepPaths
    trainable: Any  # the Tune trainable, with its resources
    max_concurrent: int
    study_storage: optuna.storages.BaseStorage
    progress: SweepProgress
    skip_corrupt: bool = False


@dataclass(frozen=True)
class Plan:
    """What one stage runs on one dataset. `search` builds the searcher and scheduler; it is only
    called when the stage starts fresh (a restored experiment keeps its own)."""

    trials: int
    param_space: dict = field(default_factory=dict)
    num_samples: int = 1
    search: Callable[[], tuple[Any, Any]] | None = None


@dataclass(frozen=True)
class Stage:
    """`plan` returns a Plan, or a string saying why the stage has nothing to run on the dataset.
    An `after_all` stage runs once every dataset has been through the stages before it."""

    name: str
    enabled: Callable[[SweepSpec], bool]
    plan: Callable[[StageContext, DatasetSpec, TrialMeta], Plan | str]
    after_all: bool = False


def trial_meta(ctx: StageContext, dataset: DatasetSpec, stage: str) -> TrialMeta:
    """What every trial of a stage gets; local paths made absolute (trials run in other directories)."""
    spec, r = ctx.spec, ctx.spec.resources
    defaults = trial_defaults(spec, dataset)
    if defaults.get("weights"):
        defaults["weights"] = str(Path(defaults["weights"]).expanduser().absolute())
    root = spec.data_root
    if root and not storage.is_uri(root):
        root = str(Path(root).expanduser().absolute())
    return TrialMeta(
        sweep=spec.name, out=str(ctx.paths.out), benchmark=dataset.benchmark, stage=stage,
        defaults=defaults, objective=spec.objective.model_dump(),
        processes=r.processes_per_trial, cpus_per_process=r.cpus_per_process, gpus_per_process=r.gpus_per_process,
        max_failures=r.max_failures, data_root=root, skip_corrupt=ctx.skip_corrupt, cluster_token=ctx.paths.token,
    )


def num_samples(spec: SweepSpec, dataset: DatasetSpec) -> int:
    if spec.algorithm.name == "grid":
        return grid_size(space_for(spec, dataset))
    return dataset.num_samples or spec.num_samples


def _search_plan(ctx: StageContext, dataset: DatasetSpec, meta: TrialMeta) -> Plan:
    """Optuna proposes the settings (one study per dataset); ASHA may stop weak trials early."""
    spec = ctx.spec
    objective = spec.objective
    multi = spec.algorithm.multi_objective
    metric = ["objective", "val_id_accuracy"] if multi else "objective"
    mode = [objective.mode, "max"] if multi else objective.mode

    def search() -> tuple[Any, Any]:
        searcher = make_searcher(
            space=space_for(spec, dataset), algorithm=spec.algorithm, metric=metric, mode=mode,
            storage=ctx.study_storage, study_name=study_name(spec, dataset),
        )
        scheduler = None
        if spec.scheduler is not None:
            scheduler = tune.schedulers.ASHAScheduler(
                time_attr="epoch", metric="objective", mode=objective.mode, max_t=validate_config(meta.defaults).epochs,
                grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor,
            )
        return searcher, scheduler

    n = num_samples(spec, dataset)
    left = n - len(finished_trials(ctx.study_storage, study_name(spec, dataset)))
    if left <= 0:
        return f"its study holds {n} finished trials already"
    # A fresh Tuner over a study with finished trials: a crash came before Tune saved its state.
    return Plan(trials=n, num_samples=left, search=search)


def study_name(spec: SweepSpec, dataset: DatasetSpec) -> str:
    return f"{spec.name}-{dataset.benchmark}"


def finished_trials(storage: optuna.storages.BaseStorage, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def _final_plan(ctx: StageContext, dataset: DatasetSpec, meta: TrialMeta) -> Plan | str:
    """The search's best setting (by the validation objective), re-trained with every final seed."""
    best = best_search_trial(ctx.paths.results, dataset.benchmark, ctx.spec.objective)
    if best is None:
        return "no completed search trial"
    seeds = list(ctx.spec.final.seeds)
    return Plan(trials=len(seeds), param_space={"best_config": best.config_json, "seed": tune.grid_search(seeds)})


def transfer_candidates(spec: SweepSpec, paths: SweepPaths) -> list[dict]:
    """The settings every dataset is measured with: each dataset's top-k search settings (by the
    validation objective), the sweep's default setting, the plain-CE baseline; deduplicated."""
    out: list[dict] = []
    for dataset in spec.datasets:
        for row in ranked_search_trials(paths.results, dataset.benchmark, spec.objective)[: spec.transfer.top_k]:
            out.append({k: row[k].item() if hasattr(row[k], "item") else row[k] for k in SETTING_COLUMNS})
    if spec.transfer.defaults:
        base = validate_config({**normalize_trial_keys(spec.trial), "benchmark": spec.datasets[0].benchmark})
        out.append({k: getattr(base, k) for k in SETTING_COLUMNS})
    if spec.transfer.baseline:
        out.append({"method": "ce", "feature_norm": "none"})
    unique: dict[str, dict] = {}
    for c in out:
        unique.setdefault(repr(sorted(c.items())), c)
    return list(unique.values())


def _transfer_plan(ctx: StageContext, dataset: DatasetSpec, meta: TrialMeta) -> Plan:
    """Every candidate setting (of every dataset's search) on this dataset, with every transfer seed."""
    candidates = transfer_candidates(ctx.spec, ctx.paths)
    seeds = list(ctx.spec.transfer.seeds)
    return Plan(trials=len(candidates) * len(seeds),
                param_space={"candidate": tune.grid_search(candidates), "seed": tune.grid_search(seeds)})


SEARCH = Stage("search", enabled=lambda spec: True, plan=_search_plan)
FINAL = Stage("final", enabled=lambda spec: spec.final is not None, plan=_final_plan)
TRANSFER = Stage("transfer", enabled=lambda spec: spec.transfer is not None, plan=_transfer_plan, after_all=True)
STAGES = (SEARCH, FINAL, TRANSFER)


def run_stages(ctx: StageContext, stages: tuple[Stage, ...] = STAGES) -> None:
    """Per dataset, its stages in order; then the `after_all` stages on every dataset."""
    wanted = [s for s in stages if s.enabled(ctx.spec)]
    for dataset in ctx.spec.datasets:
        for stage in (s for s in wanted if not s.after_all):
            run_stage(ctx, stage, dataset)
    for stage in (s for s in wanted if s.after_all):
        for dataset in ctx.spec.datasets:
            run_stage(ctx, stage, dataset)


def run_stage(ctx: StageContext, stage: Stage, dataset: DatasetSpec) -> None:
    """Run (or, after a crash, resume) one stage on one dataset; blocks until its trials end."""
    meta = trial_meta(ctx, dataset, stage.name)
    plan = stage.plan(ctx, dataset, meta)
    if isinstance(plan, str):
        ctx.progress.console.print(f"[yellow]{dataset.benchmark}: {plan}; {stage.name} stage skipped[/yellow]")
        return
    key = f"{dataset.benchmark} · {stage.name}"
    ctx.progress.begin(key, plan.trials, ctx.spec.objective.mode)
    name = experiment_name(stage.name, dataset.benchmark)
    path = ctx.paths.experiment(stage.name, dataset.benchmark)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=ctx.trainable, resume_unfinished=True, resume_errored=False)
    else:
        searcher, scheduler = plan.search() if plan.search is not None else (None, None)
        callbacks = [ProgressCallback(key), ResultsStatusCallback(str(ctx.paths.out), dataset.benchmark, stage.name)]
        if ctx.paths.study is not None:
            callbacks.append(shared_output.StudySync(ctx.paths.study))
        tuner = tune.Tuner(
            ctx.trainable,
            param_space={"sweep": meta.as_dict(), **plan.param_space},
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.num_samples,
                                        max_concurrent_trials=ctx.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=ctx.paths.ray, callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=ctx.spec.resources.max_failures),
            ),
        )
    tuner.fit()
    close_leftovers(ctx, stage, dataset)


def close_leftovers(ctx: StageContext, stage: Stage, dataset: DatasetSpec) -> None:
    """Once a stage's trials have all ended, nothing may still claim to be running: a result file
    or an Optuna trial left `running` by a crash and never continued is closed as failed, with why."""
    reason = "interrupted by a crash and not continued: the sweep ended without it"
    prefix = storage.join(ctx.paths.results, dataset.benchmark)
    for path in storage.list_files(prefix, ".parquet") if storage.exists(prefix) else []:
        if not Path(path).name.startswith(f"{stage.name}-"):
            continue
        rows = read_rows(path)
        if any(r["status"] == "running" for r in rows):
            write_results(path, with_status(rows, "failed", reason))
    if stage is SEARCH:
        try:
            study = optuna.load_study(study_name=study_name(ctx.spec, dataset), storage=ctx.study_storage)
        except KeyError:
            return
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            ctx.study_storage.set_trial_user_attr(t._trial_id, "failure", reason)
            ctx.study_storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
