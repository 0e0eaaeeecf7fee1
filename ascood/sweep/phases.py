"""Every stage of a sweep as a phase of one Tune run, so that its trial processes live across stages.

Tune keeps a finished trial's actor only for a next trial of the same run: a Tuner per stage and
dataset started a new process for each (seconds of start-up, imports and first set-up, each time).
Here one Tune run hands out the trials of every stage of every dataset: `SweepSearcher` holds one
job per stage and scope (a dataset, or the joint scope of a stage over all of them). A job waits
for the jobs it needs (what its plan reads, or a run it may reuse) to end, then runs its phase:
its own Optuna searcher or list of grid trials, and for a searched phase its own ASHA
(`PhaseScheduler`). Jobs that do not wait on each other run side by side, so one stage's
stragglers leave their slots to another's trials. What a phase is, how it is planned and what
happens at its ends belongs to the caller, a `Runtime` found by the Tune run's name (nothing of
it is pickled with the run's state).

The searcher's state (each job's phase, the Optuna searchers, the grid trials not yet handed out,
which Tune trial belongs to which phase) is plain data that Tune saves with the run, so a restored
run continues every phase where its last saved state was.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ascood.sweep.paths import OPTUNA_TRIAL
from ascood.sweep.record import Recorded

PHASE = "phase"  # in a trial's config: the key of the phase it belongs to
ASHA = "asha"  # in a searched phase's trial config: that phase's ASHA settings (or absent)


@dataclass
class Phase:
    """One stage on one job: what it hands out and which of its trials are still live."""

    key: str
    scope: str
    stage: str
    meta: dict  # every trial's "sweep" entry
    planned: int  # trials the stage will have run (shown), including any run before a crash
    left: int  # trials still to hand out
    configs: list[dict] | None = None  # a grid stage's trial configs not handed out yet
    searcher: Searcher | None = None  # a searched stage's (Optuna) searcher
    asha: dict | None = None  # a searched stage's ASHA settings
    live: set[str] = field(default_factory=set)

    def over(self) -> bool:
        return self.left <= 0 and not self.live

    def next_config(self, trial_id: str) -> dict | None:
        if self.left <= 0:
            return None
        if self.searcher is not None:
            config = self.searcher.suggest(trial_id)
            if config == Searcher.FINISHED:  # its study holds every trial it may (a restore's `left` can be stale)
                self.left = 0
                return None
            if config is None:
                return None
        else:
            config = self.configs.pop(0)
        self.left -= 1
        self.live.add(trial_id)
        out = {**config, "sweep": self.meta, PHASE: self.key}
        if self.asha is not None:
            out[ASHA] = self.asha
        return out


@dataclass
class Job:
    """One stage on one scope: it waits until every job named in `after` has ended, then runs its
    phase (or none, when the plan finds nothing to run)."""

    name: str
    scope: str  # what the runtime plans the stage on: a dataset, or a joint stage's scope
    stage: str
    after: tuple[str, ...] = ()
    rank: int = 0  # how many jobs wait on it, directly or not (set by the searcher)
    planned: bool = False
    phase: Phase | None = None
    handed: int = 0  # trials it has handed out

    def ended(self) -> bool:
        return self.planned and self.phase is None


class Runtime(Protocol):
    """What the caller supplies: how a stage is planned on a job, and what happens at a phase's ends."""

    def plan(self, scope: str, stage: str) -> Phase | None:
        """The stage's phase on the scope, or None when it has nothing to run (the runtime says why)."""

    def begin(self, phase: Phase) -> None:
        """A phase starts, or is seen for the first time in this driver (after a restore)."""

    def end(self, phase: Phase) -> None:
        """Every trial of the phase has ended."""

    def all_ended(self) -> None:
        """Every phase of every section has ended: the run is complete."""

    def record(self, config: dict) -> Recorded | None:
        """How a trial handed out with `config` ended, as its own record says (None: not ended)."""

    def history(self, config: dict) -> dict[int, dict[int, float]]:
        """Of the searched phase a trial with `config` belongs to: each ended trial's objective by
        step (epoch, or datasets done), by its Optuna number."""


_RUNTIMES: dict[str, Runtime] = {}


def attach(name: str, runtime: Runtime) -> None:
    """The runtime of the Tune run called `name` (set before the run is built or restored)."""
    _RUNTIMES[name] = runtime


def detach(name: str) -> None:
    _RUNTIMES.pop(name, None)


def grid_configs(param_space: dict) -> list[dict]:
    """A grid stage's trials: every combination of its `tune.grid_search` values (the others fixed)."""
    grids = {k: v["grid_search"] for k, v in param_space.items() if isinstance(v, dict) and "grid_search" in v}
    fixed = {k: v for k, v in param_space.items() if k not in grids}
    return [{**fixed, **dict(zip(grids, combo, strict=True))} for combo in itertools.product(*grids.values())]


def pick(jobs: Sequence[Job], live: dict[str, int]) -> list[Job]:
    """The jobs that may hand out a trial, in the order to ask them: the most waited on first (what
    other stages need is done first, and what nothing needs fills the slots at the others' ends);
    then the fewest live trials (an even share of the slots while several have work), then the
    fewest handed out so far (with fewer slots than jobs, the jobs take turns), then the sweep's order."""
    ready = [j for j in jobs if j.phase is not None and j.phase.left > 0]
    order = {j.name: i for i, j in enumerate(jobs)}
    return sorted(ready, key=lambda j: (-j.rank, live.get(j.name, 0), j.handed, order[j.name]))


def ranks(jobs: Sequence[Job]) -> dict[str, int]:
    """How many jobs wait on each job, directly or through others; a ValueError names a job that
    waits on one that does not exist, or on itself (a cycle)."""
    names = {j.name for j in jobs}
    for job in jobs:
        for a in job.after:
            if a not in names:
                raise ValueError(f"job {job.name!r} waits on {a!r}, which is not a job of the run")
    waiters: dict[str, set[str]] = {j.name: set() for j in jobs}
    by_name = {j.name: j for j in jobs}

    def upstream(name: str, path: tuple[str, ...]) -> set[str]:
        if name in path:
            raise ValueError(f"jobs wait on each other in a cycle: {' -> '.join((*path, name))}")
        out = set(by_name[name].after)
        for a in by_name[name].after:
            out |= upstream(a, (*path, name))
        return out

    for job in jobs:
        for a in upstream(job.name, ()):
            waiters[a].add(job.name)
    return {name: len(w) for name, w in waiters.items()}


class SweepSearcher(Searcher):
    """Hands out the trials of every job's phase, at most `slots` live at once."""

    def __init__(self, run: str, jobs: Sequence[Job], slots: int):
        super().__init__()
        self.run = run
        self.jobs = list(jobs)
        rank = ranks(self.jobs)
        for job in self.jobs:
            job.rank = rank[job.name]
        self.slots = slots
        self.owner: dict[str, tuple[str, str]] = {}  # Tune trial id -> (job, phase key)
        self.configs: dict[str, dict] = {}  # Tune trial id -> its config, until its searcher is told its end
        self.untold: list[tuple[str, dict | None, bool]] = []  # ended, not yet told to the phase's searcher
        self.done = False
        self._seen: set[str] = set()

    # -- Tune's Searcher interface
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | None:
        runtime = _RUNTIMES[self.run]
        self._tell(runtime)
        self._advance(runtime)
        if self.done:
            return Searcher.FINISHED
        live = {j.name: len(j.phase.live) for j in self.jobs if j.phase is not None}
        if sum(live.values()) >= self.slots:
            return None
        for job in pick(self.jobs, live):
            config = job.phase.next_config(trial_id)
            if config is not None:
                self.owner[trial_id] = (job.name, job.phase.key)
                if job.phase.searcher is not None:
                    self.configs[trial_id] = config
                job.handed += 1
                return config
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        phase = self._phase_of(trial_id)
        if phase is not None and phase.searcher is not None:
            phase.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The trial's end is told to its phase's searcher later (`_tell`, at the next `suggest` or
        save), once Tune has also run the run's callbacks, which write the trial's record: so
        Optuna never holds an end the trial's file does not. The phase itself is closed at the
        next `suggest` too."""
        phase = self._phase_of(trial_id)
        if phase is None:
            return
        if phase.searcher is not None:
            self.untold.append((trial_id, result, error))
        phase.live.discard(trial_id)

    def _tell(self, runtime: Runtime | None) -> None:
        """Tell each ended trial's searcher how it ended: as its record says when it has one (the
        record is the truth; Tune's view of a trial replayed after a crash is the replay), else as
        Tune saw it."""
        while self.untold:
            trial_id, result, error = self.untold[0]
            phase = self._phase_of(trial_id)
            config = self.configs.get(trial_id)
            recorded = runtime.record(config) if runtime is not None and config is not None else None
            if recorded is not None:
                result = {**recorded.result, TRAINING_ITERATION: recorded.result.get("epoch", 0)}
                error = recorded.status == "failed"
            if phase is not None and phase.searcher is not None:
                phase.searcher.on_trial_complete(trial_id, result=result, error=error)
            self.untold.pop(0)
            self.configs.pop(trial_id, None)

    def save(self, checkpoint_path: str) -> None:
        self._tell(_RUNTIMES.get(self.run))  # a saved state holds no end Optuna was not told
        with open(checkpoint_path, "wb") as f:
            pickle.dump({k: v for k, v in self.__dict__.items() if k != "_seen"}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.configs, self.untold = {}, []  # (a state saved before these were kept)
        self.__dict__.update(state)
        self._seen = set()
        runtime = _RUNTIMES.get(self.run)
        if runtime is not None:
            self._announce(runtime)
            if self.done:  # saved complete: Tune will not ask for another trial
                runtime.all_ended()

    # -- phases
    def _phase_of(self, trial_id: str) -> Phase | None:
        job_name, key = self.owner.get(trial_id, (None, None))
        job = next((j for j in self.jobs if j.name == job_name), None)
        return job.phase if job is not None and job.phase is not None and job.phase.key == key else None

    def _announce(self, runtime: Runtime) -> None:
        for job in self.jobs:
            if job.phase is not None and job.phase.key not in self._seen:
                self._seen.add(job.phase.key)
                runtime.begin(job.phase)

    def _advance(self, runtime: Runtime) -> None:
        """Close the phases whose trials have all ended and plan the jobs no longer waiting."""
        if self.done:
            return
        changed = True
        while changed:
            changed = False
            ended = {j.name for j in self.jobs if j.ended()}
            for job in self.jobs:
                if job.phase is not None and job.phase.over():
                    runtime.end(job.phase)
                    job.phase, changed = None, True
                elif not job.planned and all(a in ended for a in job.after):
                    job.phase, job.planned, changed = runtime.plan(job.scope, job.stage), True, True
        self._announce(runtime)
        if all(j.ended() for j in self.jobs):
            self.done = True
            runtime.all_ended()


@dataclass(frozen=True)
class _ByOptunaTrial:
    """What a phase's ASHA sees of a trial: its Optuna trial, the same for every Tune trial that
    ever runs it (a trial Tune restores, or one handed out again, is not a newcomer to its rungs)."""

    trial_id: str


class PhaseScheduler(FIFOScheduler):
    """First in, first out, except that a searched phase's trials go through that phase's own
    ASHA (its settings are in each of its trials' configs).

    Tune does not save a scheduler with the run: restored, each ASHA would start with empty rungs
    and judge the trials after a crash against fewer peers than before it. So a phase's ASHA starts
    with the rungs its ended trials' records hold (`Runtime.history`)."""

    def __init__(self, run: str | None = None):
        super().__init__()
        self.run = run
        self._asha: dict[str, ASHAScheduler] = {}

    def _of(self, trial: Any) -> tuple[ASHAScheduler, _ByOptunaTrial] | tuple[None, None]:
        settings = trial.config.get(ASHA)
        if settings is None:
            return None, None
        key = trial.config[PHASE]
        if key not in self._asha:
            self._asha[key] = ASHAScheduler(**settings)
            runtime = _RUNTIMES.get(getattr(self, "run", None) or "")
            if runtime is not None:
                _seed_rungs(self._asha[key], runtime.history(trial.config))
        scheduler, who = self._asha[key], _ByOptunaTrial(str(trial.config[OPTUNA_TRIAL]))
        if who.trial_id not in scheduler._trial_info:  # a trial restored after a crash
            scheduler.on_trial_add(None, who)
        return scheduler, who

    def on_trial_add(self, tune_controller, trial) -> None:
        self._of(trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        scheduler, who = self._of(trial)
        return TrialScheduler.CONTINUE if scheduler is None else scheduler.on_trial_result(tune_controller, who, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        scheduler, who = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_complete(tune_controller, who, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        scheduler, who = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_remove(tune_controller, who)

    def on_trial_error(self, tune_controller, trial) -> None:
        scheduler, who = self._of(trial)
        if scheduler is not None:
            scheduler.on_trial_remove(tune_controller, who)

    def debug_string(self) -> str:
        return "FIFO, with ASHA for the searched phases"


def _seed_rungs(scheduler: ASHAScheduler, history: dict[int, dict[int, float]]) -> None:
    """Put each ended trial (Optuna number -> its objective by step) on the rungs, by ASHA's own
    bookkeeping in the order ASHA saw it: each result before the last step, then the last result
    again at the trial's end. (The sweep's ASHA has one bracket.)"""
    bracket = scheduler._brackets[0]
    for number, by_step in history.items():
        if not by_step:
            continue
        who = _ByOptunaTrial(str(number))
        for step in sorted(by_step):
            if step < scheduler._max_t:
                bracket.on_result(who, step, scheduler._metric_op * by_step[step])
        last = max(by_step)
        bracket.on_result(who, last, scheduler._metric_op * by_step[last])
