"""How many trials each of the side-by-side jobs may run at once: the slots shared out evenly.

Every running job (one dataset's chain of stages, a joint stage) gets ceil(slots / jobs) trials at
a time, re-read whenever its Tune run asks for a new trial. Tune keeps a finished trial's actor
for the same run's next trial, so every slot a run holds costs one trial actor (a process that
imports torch, Ray Tune and the trackers: seconds) per stage: a run on one slot starts half the
actors of a run on two. Once other jobs end, a job's share grows and its runs take the freed
slots. A run restored after a crash reads the same table (the limiters look their job up by name;
nothing here is pickled with the experiment).

The shares may add up to more than the slots (three jobs on two slots get one each): the third
job's trial waits in Ray's queue, and Ray may hand a freed slot to a newer request, so that job
can wait through other jobs' stages; the cores stay busy. Capping the jobs' trials at the slots
instead left cores idle (measured): a run refused a new trial keeps its finished trial's actor,
holding the slot the waiting job was given, until Tune evicts it tens of seconds later.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

_lock = threading.Lock()
_jobs: dict[str, int] = {}


@contextmanager
def running(job: str) -> Iterator[None]:
    """`job` counts as running (one share of the slots) while the block runs."""
    with _lock:
        _jobs[job] = _jobs.get(job, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _jobs[job] -= 1
            if not _jobs[job]:
                del _jobs[job]


def share(job: str, slots: int) -> int:
    """Trials `job` may run at once out of `slots`: all of them when it runs alone (or is unknown)."""
    with _lock:
        jobs = len(_jobs) if job in _jobs else 1
    return max(1, math.ceil(slots / max(1, jobs)))


class _FairShare:
    """Proposes a new trial only while its job runs fewer trials than its share."""

    job: str
    slots: int

    def live(self) -> int:
        raise NotImplementedError

    def may_start(self) -> bool:
        return self.live() < share(self.job, self.slots)


class FairGrid(_FairShare, BasicVariantGenerator):
    """A grid stage's variants, at most the job's share of `slots` running at once."""

    def __init__(self, job: str, slots: int):
        self.job, self.slots = job, slots
        super().__init__(max_concurrent=slots)

    def live(self) -> int:
        return len(self._live_trials)

    def next_trial(self):
        return super().next_trial() if self.is_finished() or self.may_start() else None


class FairLimiter(_FairShare, ConcurrencyLimiter):
    """A searched stage's searcher, at most the job's share of `slots` trials running at once."""

    def __init__(self, searcher: Searcher, job: str, slots: int):
        self.job, self.slots = job, slots
        super().__init__(searcher, max_concurrent=slots)

    def live(self) -> int:
        return len(self.live_trials)

    def suggest(self, trial_id: str) -> dict | None:
        return super().suggest(trial_id) if self.may_start() else None
