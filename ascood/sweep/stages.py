"""The stages of a sweep, as data, and the one Tune run that runs them all.

A stage is a name, whether the sweep file asks for it, the stages it needs, and a plan: how many
trials, what its trials' configs hold besides the trial meta (the chosen candidates), and for a
searched stage the Optuna searcher and ASHA's settings. `run_stages` makes every stage on every
dataset a job of one Tune run (`ascood.sweep.phases`), or restores that run after a crash;
`StageRuntime` plans a job's phase once the stages it needs have ended, and closes it when its
trials have. Adding a stage is adding one `Stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from rich.markup import escape

from ascood import storage
from ascood.config import validate_config
from ascood.gain import DEFAULT_FLOOR
from ascood.results import SETTING_COLUMNS, read_results, read_rows, run_id_for, select, with_status, write_results
from ascood.sweep import shared_output, timeline
from ascood.sweep.parallel import STOP, Interrupt, side_by_side
from ascood.sweep.paths import SweepPaths, results_dir, results_file
from ascood.sweep.phases import Job, Phase, PhaseScheduler, SweepSearcher, attach, detach, grid_configs
from ascood.sweep.progress import ProgressCallback, SweepProgress
from ascood.sweep.record import Recorded, file_record, joint_record, joint_steps, steps
from ascood.sweep.results_status import ResultsStatusCallback
from ascood.sweep.searcher import make_searcher
from ascood.sweep.spec import (
    DatasetSpec,
    Objective,
    SweepSpec,
    baseline_candidate,
    comparison_seeds,
    grid_size,
    normalize_trial_keys,
    robust_space,
    space_for,
    trial_defaults,
)
from ascood.sweep.summary import best_search_trial, ranked_search_trials
from ascood.sweep.trainable import TrialMeta, trial_record
from ascood.sweep.tune_state import restorable
from ascood.verdict import CE, setting_id, transfer_rows, transfer_table, verdict


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
    tag: str = ""  # tells apart several experiments of one stage on one dataset (racing rounds)


@dataclass(frozen=True)
class Stage:
    """`plan` returns a Plan, or a string saying why the stage has nothing to run on the dataset.
    The stage starts on a dataset once the stages in `needs` have ended on it (a joint one: once it
    has ended) and those in `needs_all` on every dataset: what its plan reads, and the runs it may
    reuse rather than train twice at the same time. A stage the sweep file leaves out passes on
    what it needs."""

    name: str
    enabled: Callable[[SweepSpec], bool]
    plan: Callable[[StageContext, DatasetSpec, TrialMeta], Plan | str]
    needs: tuple[str, ...] = ()
    needs_all: tuple[str, ...] = ()
    joint: bool = False  # one run for the whole sweep (its trials span every dataset), not one per dataset


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
        tracking=spec.tracking.model_dump(),
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

    def search() -> tuple[Any, dict | None]:
        searcher = make_searcher(
            space=space_for(spec, dataset), algorithm=spec.algorithm, metric=metric, mode=mode,
            storage=ctx.study_storage, study_name=study_name(spec, dataset), budget=n,
        )
        asha = None
        if spec.scheduler is not None:
            asha = dict(time_attr="epoch", metric="objective", mode=objective.mode,
                        max_t=validate_config(meta.defaults).epochs,
                        grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor)
        return searcher, asha

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


CE_CANDIDATE = {"method": "ce", "feature_norm": "none"}


def _comparison_plan(ctx: StageContext, dataset: DatasetSpec, meta: TrialMeta) -> Plan:
    """Every baseline method of the sweep file on the dataset with the final seeds (paired with the
    ASCOOD pick's final runs); a run identical to one of another stage (CE) is reused, not retrained."""
    candidates = [baseline_candidate(ctx.spec, b) for b in ctx.spec.baselines]
    seeds = comparison_seeds(ctx.spec)
    return Plan(trials=len(candidates) * len(seeds),
                param_space={"candidate": tune.grid_search(candidates), "seed": tune.grid_search(seeds)})


def _baseline_plan(ctx: StageContext, dataset: DatasetSpec, meta: TrialMeta) -> Plan:
    """Plain CE on the dataset with the robust stage's seed: what its normalized gains are over."""
    return Plan(trials=1, param_space={"candidate": CE_CANDIDATE, "seed": ctx.spec.robust.seed})


def ce_run_id(defaults: dict, seed: int) -> str:
    """The run id of the baseline stage's CE run with these trial defaults (as its trials see them)."""
    return run_id_for(validate_config({**defaults, **CE_CANDIDATE, "seed": seed}))


JOINT_SCOPE = "all"  # what names a joint stage's Tune experiment (`OUT/ray/robust-all`)


def joint_meta(ctx: StageContext, meta: TrialMeta) -> TrialMeta:
    """What a joint trial needs: per dataset its trial defaults (with the stage's overrides) and
    the run id of its CE baseline."""
    spec = ctx.spec
    parts = []
    for dataset in spec.datasets:
        defaults = trial_meta(ctx, dataset, meta.stage).defaults
        ce = ce_run_id(defaults, spec.robust.seed)
        defaults.update(normalize_trial_keys(spec.robust.trial))
        parts.append({"benchmark": dataset.benchmark, "defaults": defaults, "ce": ce})
    return TrialMeta(**{**meta.as_dict(), "benchmark": JOINT_SCOPE, "joint": tuple(parts), "seed": spec.robust.seed,
                        "gain_floor": spec.robust.gain_floor})


def _robust_plan(ctx: StageContext, dataset: DatasetSpec, meta: TrialMeta) -> Plan | str:
    """One Optuna study for the sweep; a trial trains one setting on every dataset. The objective,
    the worst normalized gain over CE, is maximized whatever the metric (FPR@95 is mirrored)."""
    spec = ctx.spec
    name = robust_study_name(spec)

    def search() -> tuple[Any, dict | None]:
        searcher = make_searcher(space=robust_space(spec), algorithm=spec.algorithm, metric="objective", mode="max",
                                 storage=ctx.study_storage, study_name=name, budget=n)
        asha = None
        if spec.scheduler is not None and len(spec.datasets) > 1:
            asha = dict(time_attr="epoch", metric="objective", mode="max", max_t=len(spec.datasets),
                        grace_period=min(spec.scheduler.grace_period, len(spec.datasets) - 1),
                        reduction_factor=spec.scheduler.reduction_factor)
        return searcher, asha

    n = spec.robust.num_samples
    left = n - len(finished_trials(ctx.study_storage, name))
    if left <= 0:
        return f"its study holds {n} finished trials already"
    return Plan(trials=n, num_samples=left, search=search)


def robust_study_name(spec: SweepSpec) -> str:
    return f"{spec.name}-robust"


def ranked_robust_trials(spec: SweepSpec, paths: SweepPaths) -> list[tuple[float, dict]]:
    """(worst normalized gain, setting) of every joint trial that completed on every dataset, best first."""
    if not storage.exists(paths.results):
        return []
    df = read_results(paths.results)
    df = select(df, stage="robust", completed=True, final_epoch=True)
    df = df[df["norm_gain"].notna()]
    if df.empty:
        return []
    # By setting, not Tune's trial id: a joint trial continued after a crash runs under a new id,
    # and its datasets finished before the crash keep the old one.
    df = df.assign(setting=[setting_id(r) for _, r in df.iterrows()])
    ranked = []
    for _, g in df.drop_duplicates(["setting", "benchmark"]).groupby("setting"):
        if g["benchmark"].nunique() < len(spec.datasets):
            continue
        first = g.iloc[0]
        setting = {**normalize_trial_keys(spec.robust.trial),
                   **{k: first[k].item() if hasattr(first[k], "item") else first[k] for k in SETTING_COLUMNS}}
        ranked.append((float(g["norm_gain"].min()), setting))
    ranked.sort(key=lambda t: -t[0])
    return ranked


def transfer_candidates(spec: SweepSpec, paths: SweepPaths) -> list[dict]:
    """The settings every dataset is measured with: the robust stage's top-k settings, each
    dataset's top-k search settings (by the validation objective), the sweep's default setting,
    the plain-CE baseline; deduplicated."""
    out: list[dict] = []
    if spec.robust is not None:
        out += [setting for _, setting in ranked_robust_trials(spec, paths)[: spec.robust.top_k]]
    for dataset in spec.datasets:
        for row in ranked_search_trials(paths.results, dataset.benchmark, spec.objective)[: spec.transfer.top_k]:
            out.append({k: row[k].item() if hasattr(row[k], "item") else row[k] for k in SETTING_COLUMNS})
    if spec.transfer.defaults:
        base = validate_config({**normalize_trial_keys(spec.trial), "benchmark": spec.datasets[0].benchmark})
        out.append({k: getattr(base, k) for k in SETTING_COLUMNS})
    if spec.transfer.baseline:
        out.append(dict(CE_CANDIDATE))
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


# The baseline's CE run is the comparison's CE with the same seed (reused); the robust trials'
# gains are over the baseline; transfer reads every search and the robust ranking, and may reuse
# a final, comparison or robust run (same setting, dataset and seed).
SEARCH = Stage("search", enabled=lambda spec: True, plan=_search_plan)
FINAL = Stage("final", enabled=lambda spec: spec.final is not None, plan=_final_plan, needs=("search",))
BASELINE = Stage("baseline", enabled=lambda spec: spec.robust is not None, plan=_baseline_plan)
COMPARISON = Stage("comparison", enabled=lambda spec: bool(spec.baselines), plan=_comparison_plan,
                   needs=("baseline",))
ROBUST = Stage("robust", enabled=lambda spec: spec.robust is not None, plan=_robust_plan, needs_all=("baseline",),
               joint=True)
TRANSFER = Stage("transfer", enabled=lambda spec: spec.transfer is not None, plan=_transfer_plan,
                 needs=("final", "comparison", "robust"), needs_all=("search",))
STAGES = (SEARCH, FINAL, BASELINE, COMPARISON, ROBUST, TRANSFER)


SWEEP_RUN = "sweep"  # the Tune run of every stage: `OUT/ray/sweep`


def run_stages(ctx: StageContext, stages: tuple[Stage, ...] = STAGES) -> None:
    """Every stage on every dataset (a joint stage once, over all of them), each as soon as what
    it needs has ended, all in one Tune run (`ascood.sweep.phases`): its trial processes serve
    every stage."""
    STOP.clear()
    wanted = [s for s in stages if s.enabled(ctx.spec)]
    run_phases(ctx, SWEEP_RUN, stage_jobs(stages, wanted, [d.benchmark for d in ctx.spec.datasets]),
               {s.name: s for s in wanted})
    if TRANSFER in wanted and ctx.spec.transfer.max_seeds is not None:
        race(ctx)


def stage_jobs(stages: tuple[Stage, ...], wanted: list[Stage], datasets: list[str]) -> list[Job]:
    """One job per wanted stage and dataset (a joint stage: one), waiting on the jobs of the stages
    it needs; a stage not wanted is waited through (its own needs stand in for it)."""
    by_name = {s.name: s for s in stages}
    on = {s.name for s in wanted}

    def name(stage: str, scope: str) -> str:
        return f"{scope}/{stage}"

    def waits(stage: Stage, scope: str) -> set[str]:
        out: set[str] = set()
        for needed, every in [(n, False) for n in stage.needs] + [(n, True) for n in stage.needs_all]:
            other = by_name[needed]
            every = every or stage.joint
            scopes = [JOINT_SCOPE] if other.joint else datasets if every else [scope]
            for s in scopes:
                out |= {name(needed, s)} if needed in on else waits(other, s)
        return out

    return [Job(name(s.name, scope), scope, s.name, tuple(sorted(waits(s, scope))))
            for s in wanted for scope in ([JOINT_SCOPE] if s.joint else datasets)]


def race(ctx: StageContext) -> None:
    """While candidates are statistically tied with the leader (validation, paired seeds), train
    one more seed of the leader, the tied and CE on every dataset, until they separate or
    `transfer.max_seeds` seeds are measured. Each round is decided from the Parquet results alone,
    so a resumed sweep takes the same rounds; each is a Tune run of its own (`OUT/ray/transfer-seed<n>`)."""
    spec = ctx.spec
    racers = transfer_candidates(spec, ctx.paths)
    seeds = list(spec.transfer.seeds)
    floor = spec.robust.gain_floor if spec.robust else DEFAULT_FLOOR
    while len(seeds) < spec.transfer.max_seeds:
        labels = {_label(c): c for c in racers}
        rows = transfer_rows(read_results(ctx.paths.results))
        table = transfer_table(rows[rows["setting"].isin(labels) & rows["seed"].isin(seeds)], spec.objective)
        try:
            v = verdict(table, metric=spec.objective.name, floor=floor)
        except ValueError as exc:
            ctx.progress.console.print(f"[yellow]racing stopped: {exc}[/yellow]")
            return
        if not v.tied:
            return
        racers = [labels[s] for s in labels if s in {v.pick, *v.tied, CE}]
        seed = max(seeds) + 1
        plan = Plan(trials=len(racers), param_space={"candidate": tune.grid_search(racers), "seed": seed},
                    tag=f"seed{seed}")
        stage = Stage(TRANSFER.name, enabled=TRANSFER.enabled, plan=lambda ctx, d, m, plan=plan: plan)
        run_phases(ctx, f"{TRANSFER.name}-{plan.tag}", [Job(d.benchmark, d.benchmark, stage.name) for d in spec.datasets],
                   {stage.name: stage})
        seeds.append(seed)


def _label(candidate: dict) -> str:
    return CE if candidate.get("method") == "ce" else setting_id(candidate)


@dataclass
class StageRuntime:
    """How the phases of one Tune run are planned and closed (`ascood.sweep.phases.Runtime`)."""

    ctx: StageContext
    stages: dict[str, Stage]
    finished: bool = False

    def _dataset(self, scope: str) -> DatasetSpec:
        datasets = self.ctx.spec.datasets
        return next((d for d in datasets if d.benchmark == scope), datasets[0])  # a joint stage: any

    def plan(self, scope: str, stage_name: str) -> Phase | None:
        ctx, stage, dataset = self.ctx, self.stages[stage_name], self._dataset(scope)
        meta = trial_meta(ctx, dataset, stage.name)
        if stage.joint:
            meta = joint_meta(ctx, meta)
        where = meta.benchmark  # the dataset, or for a joint stage the sweep's joint study
        plan = stage.plan(ctx, dataset, meta)
        if isinstance(plan, str):
            ctx.progress.console.print(f"[yellow]{escape(where)}: {plan}; {stage.name} stage skipped[/yellow]")
            return None
        key = f"{'all datasets' if stage.joint else where} · {stage.name}" + (f" {plan.tag}" if plan.tag else "")
        if plan.search is not None:
            searcher, asha = plan.search()
            return Phase(key=key, scope=scope, stage=stage.name, meta=meta.as_dict(), planned=plan.trials,
                         left=plan.num_samples, searcher=searcher, asha=asha)
        configs = grid_configs(plan.param_space)
        return Phase(key=key, scope=scope, stage=stage.name, meta=meta.as_dict(), planned=plan.trials,
                     left=len(configs), configs=configs)

    def begin(self, phase: Phase) -> None:
        joint = self.stages[phase.stage].joint
        done = max(0, phase.planned - phase.left - len(phase.live))  # ended before a resume, as far as the run knows
        self.ctx.progress.begin(phase.key, phase.planned, "max" if joint else self.ctx.spec.objective.mode, done=done)
        timeline.record("stage_start", stage=phase.key, trials=phase.left + len(phase.live))

    def end(self, phase: Phase) -> None:
        timeline.record("stage_end", stage=phase.key)
        stage = self.stages[phase.stage]
        for d in self.ctx.spec.datasets if stage.joint else [self._dataset(phase.scope)]:
            close_leftovers(self.ctx, stage, d)

    def all_ended(self) -> None:
        self.finished = True

    def record(self, config: dict) -> Recorded | None:
        return trial_record(config)

    def history(self, config: dict) -> dict[int, dict[int, float]]:
        meta = TrialMeta(**config["sweep"])
        objective = Objective(**meta.objective)
        benchmarks = [p["benchmark"] for p in meta.joint] or [meta.benchmark]
        numbers = set()
        for b in benchmarks:
            prefix = results_dir(meta.out, b)
            for path in storage.list_files(prefix, ".parquet") if storage.exists(prefix) else []:
                stem = Path(path).stem
                if stem.startswith(f"{meta.stage}-") and stem.removeprefix(f"{meta.stage}-").isdigit():
                    numbers.add(int(stem.removeprefix(f"{meta.stage}-")))
        out = {}
        for n in sorted(numbers):
            key = f"{meta.stage}-{n:04d}"
            files = [(b, results_file(meta.out, b, key)) for b in benchmarks]
            out[n] = joint_steps(files, objective) if meta.joint else steps(files[0][1], objective)
        return out


def run_phases(ctx: StageContext, name: str, jobs: list[Job], stages: dict[str, Stage]) -> None:
    """One Tune run over `jobs`, or, after a crash, its restore; blocks until every job has ended.
    The run is driven from a thread of its own (Tune takes Ctrl-C for itself only in the main thread)."""
    runtime = StageRuntime(ctx, stages)
    path = storage.join(ctx.paths.ray, name)
    attach(name, runtime)
    try:
        side_by_side([lambda: _fit(ctx, name, path, jobs)], [name])
    finally:
        detach(name)
    if not runtime.finished:  # e.g. Tune started a run it failed to restore over with one sample
        raise RuntimeError(f"{path}: the Tune run ended before every stage had; run the sweep again with --resume")


def _fit(ctx: StageContext, name: str, path: str, jobs: list[Job]) -> None:
    if restorable(path):
        tuner = tune.Tuner.restore(path, trainable=ctx.trainable, resume_unfinished=True, resume_errored=False)
    else:
        callbacks = [ProgressCallback(), Interrupt(), ResultsStatusCallback(str(ctx.paths.out))]
        if ctx.paths.study is not None:
            callbacks.append(shared_output.StudySync(ctx.paths.study))
        tuner = tune.Tuner(
            ctx.trainable,
            tune_config=tune.TuneConfig(search_alg=SweepSearcher(name, jobs, ctx.max_concurrent),
                                        scheduler=PhaseScheduler(name), num_samples=-1, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=ctx.paths.ray, callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=ctx.spec.resources.max_failures),
            ),
        )
    tuner.fit()


def close_leftovers(ctx: StageContext, stage: Stage, dataset: DatasetSpec) -> None:
    """Once a stage's trials have all ended, nothing may still claim to be running: a result file
    left `running` by a crash and never continued is closed as failed, with why; an Optuna trial
    left RUNNING is told what its record says, or failed with the same reason when it has none."""
    reason = "interrupted by a crash and not continued: the sweep ended without it"
    prefix = results_dir(ctx.paths.out, dataset.benchmark)
    for path in storage.list_files(prefix, ".parquet") if storage.exists(prefix) else []:
        if not Path(path).name.startswith(f"{stage.name}-"):
            continue
        rows = read_rows(path)
        if any(r["status"] == "running" for r in rows):
            write_results(path, with_status(rows, "failed", reason))
    if stage in (SEARCH, ROBUST):
        name = study_name(ctx.spec, dataset) if stage is SEARCH else robust_study_name(ctx.spec)
        try:
            study = optuna.load_study(study_name=name, storage=ctx.study_storage)
        except KeyError:
            return
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            tell_recorded(ctx.study_storage, t, _study_trial_record(ctx, stage, dataset, t.number),
                          multi=stage is SEARCH and ctx.spec.algorithm.multi_objective, reason=reason)


def tell_recorded(study_storage: optuna.storages.BaseStorage, trial: optuna.trial.FrozenTrial, recorded: Recorded | None,
                  *, multi: bool, reason: str) -> None:
    """Tell a RUNNING Optuna trial what its record says (none: failed, for `reason`)."""
    tid, result = trial._trial_id, {} if recorded is None else recorded.result
    value = result.get("objective")
    if recorded is None or recorded.status == "failed" or (recorded.status == "completed" and value is None):
        study_storage.set_trial_user_attr(tid, "failure", recorded.reason if recorded and recorded.reason else reason)
        study_storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
        return
    if value is not None and not multi and int(result["epoch"]) not in trial.intermediate_values:
        study_storage.set_trial_intermediate_value(tid, int(result["epoch"]), value)
    if recorded.status == "completed":
        values = [value, result["val_id_accuracy"]] if multi else [value]
        study_storage.set_trial_state_values(tid, optuna.trial.TrialState.COMPLETE, values)
    else:
        study_storage.set_trial_state_values(tid, optuna.trial.TrialState.PRUNED)


def _study_trial_record(ctx: StageContext, stage: Stage, dataset: DatasetSpec, number: int) -> Recorded | None:
    """The record of a searched stage's Optuna trial `number`, from its file(s) alone."""
    key = f"{stage.name}-{number:04d}"
    objective = ctx.spec.objective
    if stage is SEARCH:
        return file_record(results_file(ctx.paths.out, dataset.benchmark, key), objective)
    return joint_record([(d.benchmark, results_file(ctx.paths.out, d.benchmark, key)) for d in ctx.spec.datasets], objective)
