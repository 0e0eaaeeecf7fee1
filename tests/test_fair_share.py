"""The fair share of the slots between side-by-side jobs, as Tune's limiters read it."""

import pickle
import threading

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


def test_limiters_follow_the_table_and_survive_pickling():
    grid = FairGrid("a", 2)
    limiter = FairLimiter(_Counting(), "a", 2)
    assert grid.max_concurrent == limiter.max_concurrent == 2
    with running("a"), running("b"):
        assert grid.max_concurrent == limiter.max_concurrent == 1
        assert limiter.suggest("t1") == {"x": 1}
        assert limiter.suggest("t2") is None  # the share is used up
        limiter.on_trial_complete("t1", {"objective": 1.0})
        assert limiter.suggest("t3") == {"x": 2}
        restored = pickle.loads(pickle.dumps(limiter))  # what Tune's restore gives back
        assert restored.max_concurrent == 1 and restored.suggest("t4") is None
    assert restored.max_concurrent == 2 and restored.suggest("t4") == {"x": 3}


def test_shares_are_safe_to_change_from_threads():
    def churn(name):
        for _ in range(500):
            with running(name):
                assert 1 <= share(name, 8) <= 8

    threads = [threading.Thread(target=churn, args=(f"j{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fair_share._jobs == {}
