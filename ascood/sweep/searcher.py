"""Optuna inside Ray Tune: the search space, the samplers, and how trials are told to Optuna."""

from __future__ import annotations

from functools import partial

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ascood.sweep.outcome import GAIN_PREFIX, trial_outcome
from ascood.sweep.paths import OPTUNA_TRIAL
from ascood.sweep.record import REPLAYED
from ascood.sweep.spec import Algorithm, Dimension, Space, integer_dimension


def suggest(trial: optuna.Trial, dims: dict[str, Dimension]) -> None:
    """Define-by-run space: floats (log where asked), integers for integer method options, and
    categorical choices."""
    for name, dim in dims.items():
        if dim.choices is not None:
            trial.suggest_categorical(name, dim.choices)
        elif integer_dimension(name):
            trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            trial.suggest_float(name, dim.low, dim.high, log=dim.log)


class _SeededByNumber:
    """A sampler whose random draws for a trial come from (seed, trial number) alone.

    Tune restores the searcher after a crash with the random state it had at its last saved
    snapshot; a sampler that draws from its running state would then hand out, under a new trial
    number, a setting it had already handed out (the same setting trained twice). Seeding by the
    trial number makes a number's draws the same however often the sampler is restored, and two
    numbers' draws independent. (`_rng` is the random state Optuna 5.0's samplers draw from.)
    """

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, seed=seed, **kwargs)
        self._number_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seed = (self._number_seed * 1_000_003 + trial.number) % 2**32
        self._rng.rng.seed(seed)
        for name in ("_random_sampler", "_independent_sampler"):  # TPE's, the GP's start-up trials
            inner = getattr(self, name, None)
            if inner is not None:
                inner._rng.rng.seed(seed)
        super().before_trial(study, trial)


class SeededTPESampler(_SeededByNumber, optuna.samplers.TPESampler):
    pass


class SeededRandomSampler(_SeededByNumber, optuna.samplers.RandomSampler):
    pass


class SeededGPSampler(_SeededByNumber, optuna.samplers.GPSampler):
    pass


class SeededGridSampler(_SeededByNumber, optuna.samplers.GridSampler):
    pass


def make_sampler(algorithm: Algorithm, space: Space) -> optuna.samplers.BaseSampler:
    if algorithm.name == "random":
        return SeededRandomSampler(seed=algorithm.seed)
    if algorithm.name == "grid":
        grid = {name: list(dim.choices) for name, dim in space.dimensions().items()}
        return SeededGridSampler(grid, seed=algorithm.seed)
    if algorithm.name == "gp":
        return SeededGPSampler(seed=algorithm.seed, n_startup_trials=algorithm.startup_trials)
    return SeededTPESampler(seed=algorithm.seed, multivariate=True, n_startup_trials=algorithm.startup_trials)


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna what really happened to a trial, and asks it for exactly
    `budget` trials whatever the crashes.

    Ray's integration tells a trial that ASHA stopped early as COMPLETE with its truncated value,
    so TPE learns from half-trained scores as if they were final. Here a trial whose last result
    did not reach its planned epochs is told PRUNED (Optuna then ranks it by its intermediate
    values, below every completed trial, which is what TPE is designed for), and a trial that
    diverged or crashed is told FAIL (excluded from the model). Intermediate values are keyed by
    epoch (for a joint trial: datasets done), the step ASHA compares trials at.
    """

    def __init__(self, *args, budget: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget

    def suggest(self, trial_id: str) -> dict | str | None:
        """Optuna's next trial, tagged with its number (what names the trial's files). A trial the
        study holds as RUNNING that no Tune trial owns (Tune lost it in a crash after Optuna was
        asked) is handed out again before anything new is asked: it continues from its own
        checkpoint instead of being trained anew under another number. Nothing new is asked once
        the study holds `budget` trials: the count is the study's, not the restored searcher's
        (Tune may restore a state older than trials that were asked, and even ended, before a kill)."""
        if trial_id not in self._ot_trials:
            orphan = self._orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = optuna.Trial(self._ot_study, orphan._trial_id)
            elif self.budget is not None and len(self._ot_study.get_trials(deepcopy=False)) >= self.budget:
                return Searcher.FINISHED
        params = super().suggest(trial_id)
        if params is None:
            return None
        return {**params, OPTUNA_TRIAL: self._ot_trials[trial_id].number}

    def _orphan(self) -> optuna.trial.FrozenTrial | None:
        owned = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in sorted(running, key=lambda t: t.number) if t._trial_id not in owned), None)

    def _stored(self, trial_id: str) -> optuna.trial.FrozenTrial | None:
        ot_trial = self._ot_trials.get(trial_id)
        return None if ot_trial is None else self._ot_study._storage.get_trial(ot_trial._trial_id)

    def _already_told(self, trial_id: str) -> bool:
        """True when the study already holds this trial's outcome (or knows no such trial).

        After a driver crash, Tune restores searcher state that can be older than the study in
        SQLite: a trial finished (and told) before the crash may run again after `--resume`
        (it replays its record: `ascood.sweep.record`).
        """
        stored = self._stored(trial_id)
        return stored is None or stored.state.is_finished()

    def _report(self, trial_id: str, result: dict) -> None:
        """The result's objective as the trial's intermediate value at its epoch, once."""
        value = result.get(self.metric) if isinstance(self.metric, str) else None
        if value is None:
            return
        step = int(result.get("epoch", result.get(TRAINING_ITERATION, 0)))
        if step not in self._stored(trial_id).intermediate_values:
            self._ot_trials[trial_id].report(value, step)

    def _keep_attrs(self, trial_id: str, result: dict | None) -> None:
        """Per-dataset values a joint trial reports (`gain/<dataset>`) are kept on its Optuna trial."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or not result:
            return
        for k, v in result.items():
            if k.startswith(GAIN_PREFIX) and v is not None:
                ot_trial.set_user_attr(k, float(v))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(REPLAYED) or self._already_told(trial_id):
            return  # a replayed record is told once, as the trial's end
        self._keep_attrs(trial_id, result)
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or self._already_told(trial_id):
            self._completed_trials.add(trial_id)
            return
        self._keep_attrs(trial_id, result)
        outcome = trial_outcome(result, error=error)
        if outcome != "completed":
            if outcome == "stopped-early":
                # Tune hands the result a trial was stopped at to on_trial_complete only, never to
                # on_trial_result: record it, or TPE would rank the trial without its last score.
                self._report(trial_id, result)
            state = optuna.trial.TrialState.FAIL if outcome == "failed" else optuna.trial.TrialState.PRUNED
            try:
                self._ot_study.tell(self._ot_trials[trial_id], state=state)
            finally:
                self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def make_searcher(
    *, space: Space, algorithm: Algorithm, metric: str | list[str], mode: str | list[str],
    storage: optuna.storages.BaseStorage, study_name: str, budget: int | None = None,
) -> TruthfulOptunaSearch:
    """One Optuna study per dataset, kept in `storage` so optuna-dashboard can open it; `budget`:
    how many trials the study may ever hold."""
    return TruthfulOptunaSearch(
        budget=budget,
        space=partial(suggest, dims=space.dimensions()),
        metric=metric,
        mode=mode,
        sampler=make_sampler(algorithm, space),
        study_name=study_name,
        storage=storage,
    )
