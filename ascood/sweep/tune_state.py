"""Whether a stage's Tune run can be restored after a crash, and what to set aside so it can.

Tune 2.60 saves a run as one set of files per driver session (`experiment_state-<session>.json`,
the trials, and the search algorithm's state), written in a staging directory and uploaded to
the run's directory one file at a time. `Tuner.can_restore` asks only for tuner.pkl, written
when the Tuner is built, and a restore whose newest state is missing or unreadable does not
fail: Tune starts the run over with one sample and no param_space (its restore passes neither
on). So a stage is restored only from a session whose files are whole and were saved together;
a newest session left otherwise by a kill is set aside (renamed, hidden from Tune) and Tune
restores the session before it, as if the kill had come before that last save. With no such
session the stage is built afresh, and its plan counts what the study and the results hold.
"""

from __future__ import annotations

import json

import ray.cloudpickle as cloudpickle
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.search_generator import SearchGenerator

from ascood import storage

SET_ASIDE = ".unusable-"
_TRIALS = TuneController.CKPT_FILE_TMPL
_SEARCH = (SearchGenerator.CKPT_FILE_TMPL, BasicVariantGenerator.CKPT_FILE_TMPL)
_SESSION_FILES = (_TRIALS, *_SEARCH, Searcher.CKPT_FILE_TMPL, CallbackList.CKPT_FILE_TMPL)


def _sessions(names: list[str]) -> list[str]:
    head, _, tail = _TRIALS.partition("{}")
    return sorted(n[len(head):-len(tail)] for n in names if n.startswith(head) and n.endswith(tail))


def _created(state: dict) -> int:
    """Trials the search algorithm had created when its state was saved."""
    if "counter" in state:  # SearchGenerator
        return int(state["counter"])
    return max((int(i.counter) for i in state["_iterators"]), default=0)  # BasicVariantGenerator's trial iterators


def _whole(path: str, session: str, names: list[str]) -> bool:
    """The session's files are all there, read, and were saved together: the search algorithm
    had created as many trials as the trials file holds. (Tune uploads the files one by one; a
    kill between them leaves a newer trials file beside an older search state, which would hand
    out again, or forget, the trials created in between.)"""
    search = next((t.format(session) for t in _SEARCH if t.format(session) in names), None)
    if search is None:
        return False
    try:
        trials = json.loads(storage.read_text(storage.join(path, _TRIALS.format(session))) or "")["trial_data"]
        for name in (t.format(session) for t in _SESSION_FILES[1:]):
            if name in names:
                state = cloudpickle.loads(storage.read_bytes(storage.join(path, name)))
                if name == search and _created(state) != len(trials):
                    return False
    except Exception:  # whatever a file cut short raises: it cannot be restored from
        return False
    return True


def restorable(path: str) -> bool:
    """True when the Tune run at `path` has a whole saved session to restore from; newer sessions
    that are not whole are set aside first."""
    while True:
        names = storage.names(path)
        sessions = _sessions(names)
        if not sessions:
            return False
        newest = sessions[-1]
        if _whole(path, newest, names):
            return True
        for name in (t.format(newest) for t in _SESSION_FILES):
            if name in names:
                storage.move(storage.join(path, name), storage.join(path, SET_ASIDE + name))
