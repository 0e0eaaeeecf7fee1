"""After a crash Tune restores the searcher from a snapshot older than the study: a trial Optuna
handed out after that snapshot must come back as itself, and no setting may be proposed twice."""

import optuna
import pytest
from ray.tune.search import Searcher

from ascood.sweep.paths import OPTUNA_TRIAL
from ascood.sweep.searcher import make_searcher
from ascood.sweep.spec import Algorithm, Dimension, Space

SPACE = Space(alpha=Dimension(low=0.01, high=10.0, log=True), p_inv=Dimension(low=0.05, high=0.5))


def _searcher(storage, algorithm):
    return make_searcher(space=SPACE, algorithm=algorithm, metric="objective", mode="max",
                         storage=storage, study_name="s")


# the default TPE (its random start-up trials), and TPE and the GP past one start-up trial: their
# model-based proposals must be as reproducible under a restore as the random ones
ALGORITHMS = [Algorithm(seed=0), Algorithm(seed=0, startup_trials=1),
              Algorithm(name="gp", seed=0, startup_trials=1), Algorithm(name="random", seed=3)]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=["tpe", "tpe-modelled", "gp-modelled", "random"])
def test_an_orphaned_optuna_trial_is_handed_out_again_and_nothing_is_proposed_twice(tmp_path, algorithm):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    first = _searcher(storage, algorithm)
    a = first.suggest("tune-a")
    first.on_trial_complete("tune-a", {"objective": 0.5, "epoch": 1, "epochs": 1, "training_iteration": 1})
    snapshot = tmp_path / "searcher.pkl"
    first.save(str(snapshot))  # Tune's last saved state: it knows trial a only
    b = first.suggest("tune-b")  # Optuna asked, then the driver is killed before Tune saves again

    restored = _searcher(storage, algorithm)
    restored.restore(str(snapshot))
    again = restored.suggest("tune-c")
    assert again == b, "the orphaned trial continues under its own Optuna number, with its own setting"
    fresh = restored.suggest("tune-d")
    assert fresh[OPTUNA_TRIAL] == b[OPTUNA_TRIAL] + 1
    settings = [tuple(sorted((k, v) for k, v in s.items() if k != OPTUNA_TRIAL)) for s in (a, b, fresh)]
    assert len(set(settings)) == 3, "a restored sampler proposes no setting it has handed out already"
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 3


def test_a_trial_asked_and_ended_after_the_snapshot_counts_against_the_budget(tmp_path):
    """How an 11th trial appeared for `num_samples: 10`: Optuna asked for a trial after Tune's last
    save, the trial ended (told) before the kill, and the restored searcher, whose state said one
    more trial was to come, asked Optuna for another. The count is the study's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")

    def searcher():
        return make_searcher(space=SPACE, algorithm=Algorithm(seed=0), metric="objective", mode="max",
                             storage=storage, study_name="s", budget=3)

    first = searcher()
    first.suggest("tune-a")
    snapshot = tmp_path / "searcher.pkl"
    first.save(str(snapshot))
    b = first.suggest("tune-b")  # asked after the snapshot, and ended before the kill
    first.on_trial_complete("tune-b", {"objective": 0.7, "epoch": 1, "epochs": 1, "training_iteration": 1})

    restored = searcher()
    restored.restore(str(snapshot))
    c = restored.suggest("tune-c")
    assert c[OPTUNA_TRIAL] == b[OPTUNA_TRIAL] + 1, "the ended trial is not handed out again, and counts"
    assert restored.suggest("tune-d") == Searcher.FINISHED, "three trials for a budget of three"
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
