"""Tune runs driven from driver threads, and a Ctrl-C that stops them all.

A sweep's Tune run (every stage of every dataset, `ascood.sweep.phases`) is driven from a thread
of its own. Tune catches SIGINT only in the main thread, so here it never does: the
main thread gets the KeyboardInterrupt, sets `STOP`, and every Tune loop raises `SweepInterrupted`
at its next step (the `Interrupt` callback) — the state a crash leaves, which `--resume` continues,
with nothing closed as failed and no later stage started on an unfinished one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ray.tune import Callback

STOP = threading.Event()


class SweepInterrupted(Exception):
    """The user stopped the sweep; raised inside each running Tune loop."""


class Interrupt(Callback):
    """Ends the Tune run it belongs to at its next step once `STOP` is set (holds no state, so it
    pickles with the experiment and works again after a restore)."""

    def on_step_begin(self, iteration, trials, **info):
        if STOP.is_set():
            raise SweepInterrupted("interrupted")


def side_by_side(jobs: Sequence[Callable[[], None]], names: Sequence[str] | None = None) -> None:
    """Run every job at once, each in a thread, and wait for all. A job that fails does not stop
    the others; once all have ended, the first failure is raised. A KeyboardInterrupt here stops
    every job's Tune runs and is raised once they have ended."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(job: Callable[[], None], name: str) -> None:
        try:
            job()
        except BaseException as exc:  # raised in the main thread below
            with lock:
                errors.append(exc)

    names = list(names or [f"job-{i}" for i in range(len(jobs))])
    threads = [threading.Thread(target=run, args=(job, name), name=f"sweep:{name}", daemon=True)
               for job, name in zip(jobs, names, strict=True)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():  # a timed wait: the main thread runs Python between waits, where a
                t.join(0.5)      # SIGINT that the kernel handed to another thread is raised
    except KeyboardInterrupt:
        STOP.set()
        for t in threads:
            t.join()
        raise
    real = [e for e in errors if not isinstance(e, SweepInterrupted)]
    if real:
        raise real[0]
    if errors:
        raise KeyboardInterrupt
