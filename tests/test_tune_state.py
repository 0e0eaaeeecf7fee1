"""Which saved Tune session a stage is restored from, on the file layout Tune 2.60 writes."""

import json

import ray.cloudpickle as cloudpickle

from ascood.sweep.tune_state import SET_ASIDE, restorable

OLD, NEW = "2026-12-04_01-00-00", "2026-12-04_02-00-00"


class _TrialIterator:  # what Ray's BasicVariantGenerator keeps per experiment: trials created so far
    def __init__(self, counter: int):
        self.counter = counter


def _session(d, session, *, n=1, trials: bytes | None = None, search: bytes | None = None, grid=False) -> None:
    """A session's files as Tune 2.60 names them; `n` trials created, in both files."""
    state = json.dumps({"trial_data": [["{}", "{}"]] * n, "runner_data": {}, "stats": {}})
    (d / f"experiment_state-{session}.json").write_bytes(trials or state.encode())
    name = f"basic-variant-state-{session}.json" if grid else f"search_gen_state-{session}.json"
    made = {"_iterators": [_TrialIterator(n)], "_total_samples": 4} if grid else {"counter": n, "total_samples": 4}
    (d / name).write_bytes(search or cloudpickle.dumps(made))
    if not grid:
        (d / f"searcher-state-{session}.pkl").write_bytes(cloudpickle.dumps({"study": "s"}))


def test_only_tuner_pkl_is_not_restorable(tmp_path):
    (tmp_path / "tuner.pkl").write_bytes(b"x")
    assert not restorable(str(tmp_path)) and not restorable(str(tmp_path / "absent"))


def test_the_newest_whole_session_is_restored_from_and_nothing_is_moved(tmp_path):
    _session(tmp_path, OLD)
    _session(tmp_path, NEW, grid=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert restorable(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_newest_session_cut_short_is_set_aside_and_the_one_before_used(tmp_path):
    _session(tmp_path, OLD)
    whole = cloudpickle.dumps({"counter": 2, "pad": list(range(100))})
    _session(tmp_path, NEW, n=2, search=whole[: len(whole) // 2])  # a pickle cut short
    trial_dir = tmp_path / f"sweep_trial_ab12_1_alpha=0.1_{NEW}"  # a trial started in that session
    trial_dir.mkdir()
    assert restorable(str(tmp_path))
    names = {p.name for p in tmp_path.iterdir()}
    assert {f"experiment_state-{OLD}.json", f"search_gen_state-{OLD}.json", trial_dir.name} <= names
    assert not any(NEW in n and not n.startswith(SET_ASIDE) for n in names - {trial_dir.name})
    assert f"{SET_ASIDE}searcher-state-{NEW}.pkl" in names


def test_a_trials_file_newer_than_its_search_state_is_set_aside(tmp_path):
    """Uploaded one file at a time: the trials file of the newest save beside the search state of
    the save before (one trial fewer), for a searched and for a grid stage."""
    for grid in (False, True):
        d = tmp_path / str(grid)
        d.mkdir()
        _session(d, OLD, n=1, grid=grid)
        _session(d, NEW, n=3, grid=grid)
        name = f"basic-variant-state-{NEW}.json" if grid else f"search_gen_state-{NEW}.json"
        older = cloudpickle.dumps({"_iterators": [_TrialIterator(2)]} if grid else {"counter": 2})
        (d / name).write_bytes(older)
        assert restorable(str(d))
        assert (d / f"{SET_ASIDE}experiment_state-{NEW}.json").exists()
        assert (d / f"experiment_state-{OLD}.json").exists()


def test_trials_file_cut_short_or_search_state_missing_leaves_nothing_to_restore(tmp_path):
    _session(tmp_path, OLD, trials=b'{"trial_data": [')
    (tmp_path / f"experiment_state-{NEW}.json").write_text("{}")  # killed before its search state
    assert not restorable(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        SET_ASIDE + n for n in (f"experiment_state-{OLD}.json", f"search_gen_state-{OLD}.json",
                                f"searcher-state-{OLD}.pkl", f"experiment_state-{NEW}.json"))
