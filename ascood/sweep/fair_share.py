"""How many trials each of the side-by-side jobs may run at once: the slots shared out evenly.

Every running job (one dataset's chain of stages, a joint stage) gets ceil(slots / jobs) trials at
a time, re-read whenever its Tune run asks for a new trial. Two reasons. Tune keeps a finished
trial's actor for the same run's next trial, so a run holding more slots than its share keeps them
for its whole stage while another dataset waits; and every slot a run holds costs a trial actor
(a process importing torch, Ray Tune and the trackers: seconds each), paid again by every stage,
so a run that holds one slot instead of two starts half the actors. Once other jobs end, a job's
share grows and its runs take the freed slots. A run that is restored after a crash reads the same
table (the limiters look up their job by name; nothing here is pickled with the experiment).
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
    """`max_concurrent` read from the share table: the attribute Tune's limiters check before each
    new trial. Setting it (their `__init__` does) sets the cap the share is taken of."""

    job: str
    slots: int

    @property
    def max_concurrent(self) -> int:
        return share(self.job, self.slots)

    @max_concurrent.setter
    def max_concurrent(self, value: int) -> None:
        self.slots = value


class FairGrid(_FairShare, BasicVariantGenerator):
    """A grid stage's variants, at most the job's share of `slots` running at once."""

    def __init__(self, job: str, slots: int):
        self.job = job
        super().__init__(max_concurrent=slots)


class FairLimiter(_FairShare, ConcurrencyLimiter):
    """A searched stage's searcher, at most the job's share of `slots` trials running at once."""

    def __init__(self, searcher: Searcher, job: str, slots: int):
        self.job = job
        super().__init__(searcher, max_concurrent=slots)
