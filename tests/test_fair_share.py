"""The fair share of the slots between side-by-side jobs, as Tune's limiters read it."""

import pickle
import threading

from ray import tune
from ray.tune.search import Searcher

from ascood.sweep import fair_share
from ascood.sweep.fair_share import FairGrid, FairLimiter, running, share


class _Counting(Searcher):
    def __init__(self):
        super().__init__(metric="objective", mode="max")
        self.n = 0

    def suggest(self, trial_id):
        self.n += 1
        return {"x": self.n}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_share_is_the_slots_over_the_running_jobs_rounded_up():
    assert share("a", 4) == 4  # unknown job: alone
    with running("a"):
        assert share("a", 4) == 4
        with running("b"), running("c"):
            assert [share(j, 4) for j in "abc"] == [2, 2, 2]
            assert share("a", 2) == 1
            assert share("a", 1) == 1
        assert share("a", 3) == 3
    assert fair_share._jobs == {}


def test_a_job_entered_twice_counts_once_and_leaves_on_error():
    with running("a"), running("b"):
        try:
            with running("a"):
                assert share("b", 2) == 1
                raise RuntimeError
        except RuntimeError:
            pass
        assert share("b", 2) == 1  # "a" still runs its outer block
    assert fair_share._jobs == {}


def test_limiters_keep_to_the_share_and_survive_pickling():
    limiter = FairLimiter(_Counting(), "a", 2)
    assert limiter.suggest("t1") == {"x": 1} and limiter.suggest("t2") == {"x": 2}  # alone: both slots
    limiter.on_trial_complete("t1", {"objective": 1.0})
    limiter.on_trial_complete("t2", {"objective": 1.0})
    with running("a"), running("b"):
        assert limiter.suggest("t3") == {"x": 3}
        assert limiter.suggest("t4") is None  # its share (one of two slots) is used
        limiter.on_trial_complete("t3", {"objective": 1.0})
        assert limiter.suggest("t4") == {"x": 4}
        restored = pickle.loads(pickle.dumps(limiter))  # what Tune's restore gives back
        assert restored.suggest("t5") is None
    assert restored.suggest("t5") == {"x": 5}  # alone again


def test_a_grid_keeps_to_the_share_and_finishes():
    tune.register_trainable("fair_share_noop", lambda config: None)
    grid = FairGrid("c", 2)
    grid.add_configurations({"grid": {"run": "fair_share_noop", "config": {"x": {"grid_search": [1, 2, 3]}}}})
    with running("b"), running("c"):
        first = grid.next_trial()
        assert first is not None and grid.next_trial() is None  # one of two slots
        grid.on_trial_complete(first.trial_id)
    with running("c"):  # alone: both slots
        rest = [grid.next_trial(), grid.next_trial()]
        assert None not in rest and grid.next_trial() is None
        for t in rest:
            grid.on_trial_complete(t.trial_id)
        assert grid.next_trial() is None and grid.is_finished()


def test_shares_are_safe_to_change_from_threads():
    seen: list[int] = []  # an assert inside a thread would not fail the test: collect, check here

    def churn(name):
        for _ in range(500):
            with running(name):
                seen.append(share(name, 8))

    threads = [threading.Thread(target=churn, args=(f"j{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 * 500 and all(1 <= s <= 8 for s in seen)
    assert fair_share._jobs == {}
