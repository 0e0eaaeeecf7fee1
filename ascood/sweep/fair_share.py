"""How many trials each of the side-by-side jobs may run at once: the slots shared out evenly.

Every running job (one dataset's chain of stages, a joint stage) gets ceil(slots / jobs) trials at
a time, re-read whenever its Tune run asks for a new trial. Two reasons. Tune keeps a finished
trial's actor for the same run's next trial, so a run holding more slots than its share keeps them
for its whole stage while another dataset waits; and every slot a run holds costs a trial actor
(a process importing torch, Ray Tune and the trackers: seconds each), paid again by every stage,
so a run that holds one slot instead of two starts half the actors. Once other jobs end, a job's
share grows and its runs take the freed slots. A run that is restored after a crash reads the same
table (the limiters look up their job by name; nothing here is pickled with the experiment).

The jobs' runs together never hold more than the slots: a new trial is proposed only while the
running jobs' live trials leave a slot free. A run asking beyond what the cluster can give would
wait in Ray's queue, and Ray hands a freed slot to whichever request it retries first, often a
newer one: a dataset could wait through other datasets' whole chains. With no request waiting in
Ray, a slot freed when a stage ends goes to the job that asks for it next, usually one already
waiting (a run whose trial ended proposes its next trial at once, so it keeps its slot, and its
actor, for the rest of its stage).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

_lock = threading.Lock()
_jobs: dict[str, int] = {}
_limiters: weakref.WeakSet = weakref.WeakSet()


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


def free_slots(slots: int) -> int:
    """Slots of `slots` that no running job's live trial holds."""
    with _lock:
        live = sum(limiter.live() for limiter in list(_limiters) if limiter.job in _jobs)
    return slots - live


class _FairShare:
    """Proposes a new trial only while its job runs fewer than its share and a slot is free."""

    job: str
    slots: int

    def live(self) -> int:
        raise NotImplementedError

    def may_start(self) -> bool:
        _limiters.add(self)  # a limiter restored by Tune joins the table the first time it is asked
        mine = self.live()
        return mine < share(self.job, self.slots) and free_slots(self.slots) > 0


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
