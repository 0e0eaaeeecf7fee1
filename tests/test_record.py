"""A trial's record, the truth a resume follows: what its Parquet file(s) say about how it ended,
and what the trial reports when it replays them."""

import pytest

from ascood.results import SCHEMA_VERSION, write_results
from ascood.sweep.objective import epoch_metrics
from ascood.sweep.record import REPLAYED, file_record, joint_record, joint_steps, rows_record, steps
from ascood.sweep.spec import Objective

OBJECTIVE = Objective(metric="val/auroc", scorer="energy")


def _rows(epochs_done: int, status: str, *, epochs: int = 3, auroc: float = 80.0, gain: float | None = None) -> list[dict]:
    """A run's rows: per evaluated epoch, validation and test rows of two scorers."""
    rows = []
    for epoch in range(1, epochs_done + 1):
        for split in ("val", "test"):
            for scorer, bonus in (("energy", 0.0), ("msp", -5.0)):
                rows.append({"schema_version": SCHEMA_VERSION, "run_id": "r", "epoch": epoch, "epochs": epochs,
                             "split": split, "scorer": scorer,
                             "ood_set": "a", "ood_group": "near", "auroc": auroc + epoch + bonus, "id_accuracy": 90.0,
                             "wall_time_s": 1.0 * epoch, "status": status, "status_reason": None, "norm_gain": gain})
    return rows


def test_a_run_still_running_or_mixed_has_no_record():
    assert rows_record([], OBJECTIVE) is None
    assert rows_record(_rows(2, "running"), OBJECTIVE) is None
    mixed = _rows(1, "completed") + [{**r, "epoch": 2} for r in _rows(1, "running")]
    assert rows_record(mixed, OBJECTIVE) is None


def test_a_stopped_run_replays_its_last_epoch_as_stopped():
    rec = rows_record(_rows(1, "stopped-early"), OBJECTIVE)
    assert rec.status == "stopped-early"
    assert rec.result == {**epoch_metrics(_rows(1, "stopped-early"), OBJECTIVE), "status": "stopped-early", REPLAYED: True}
    assert rec.result["epoch"] == 1 and rec.result["epochs"] == 3 and rec.result["objective"] == pytest.approx(81.0)


def test_a_completed_and_a_failed_run():
    done = rows_record(_rows(3, "completed"), OBJECTIVE)
    assert done.status == "completed" and done.result["epoch"] == 3 and done.result["objective"] == pytest.approx(83.0)
    failed = [{**r, "status_reason": "loss is nan"} for r in _rows(2, "failed")]
    rec = rows_record(failed, OBJECTIVE)
    assert rec.status == "failed" and rec.reason == "loss is nan"
    assert rec.result == {"status": "failed", "reason": "loss is nan", "epoch": 2, "epochs": 3, REPLAYED: True}
    status_row = [{"run_id": "r", "epoch": 0, "epochs": 3, "split": None, "status": "stopped-early",
                   "status_reason": "stopped", "norm_gain": None}]
    rec = rows_record(status_row, OBJECTIVE)
    assert rec.status == "stopped-early" and "objective" not in rec.result, "no null a scheduler would read"


def test_steps_of_a_file_are_its_objective_by_epoch_once_it_ended(tmp_path):
    path = tmp_path / "search-0000.parquet"
    write_results(path, _rows(2, "running"))
    assert steps(str(path), OBJECTIVE) == {}, "a run that has not ended is not on any rung yet"
    write_results(path, _rows(2, "stopped-early"))
    assert steps(str(path), OBJECTIVE) == {1: pytest.approx(81.0), 2: pytest.approx(82.0)}
    assert file_record(str(path), OBJECTIVE).status == "stopped-early"
    assert file_record(str(tmp_path / "none.parquet"), OBJECTIVE) is None


def test_a_joint_trial_ends_where_its_first_unfinished_dataset_says(tmp_path):
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    write_results(a, _rows(3, "completed", gain=0.4))
    files = [("a", a), ("b", b)]
    assert joint_record(files, OBJECTIVE) is None, "dataset b not started: the trial has not ended"
    write_results(b, _rows(1, "running", gain=0.1))
    assert joint_record(files, OBJECTIVE) is None
    write_results(b, [{**r, "status_reason": "stopped by the scheduler after 1 of 2 datasets"}
                      for r in _rows(1, "stopped-early", gain=0.1)])
    rec = joint_record(files, OBJECTIVE)
    assert rec.status == "stopped-early"
    assert rec.result == {"objective": pytest.approx(0.4), "epoch": 1, "epochs": 2, "status": "stopped-early",
                          REPLAYED: True, "gain/a": pytest.approx(0.4)}
    assert joint_steps(files, OBJECTIVE) == {1: pytest.approx(0.4)}
    write_results(b, _rows(3, "completed", gain=0.1))
    rec = joint_record(files, OBJECTIVE)
    assert rec.status == "completed" and rec.result["objective"] == pytest.approx(0.1) and rec.result["epoch"] == 2
    assert joint_steps(files, OBJECTIVE) == {1: pytest.approx(0.4), 2: pytest.approx(0.1)}
    write_results(b, [{**r, "status_reason": "loss is nan"} for r in _rows(2, "failed", gain=None)])
    rec = joint_record(files, OBJECTIVE)
    assert rec.status == "failed" and rec.result["reason"] == "b: loss is nan" and rec.result["epoch"] == 1


@pytest.mark.parametrize("status, state", [("completed", "COMPLETE"), ("stopped-early", "PRUNED"), ("failed", "FAIL"),
                                           (None, "FAIL")])
def test_an_optuna_trial_left_running_is_told_what_its_record_says(tmp_path, status, state):
    """What a phase's end does with an Optuna trial still RUNNING (Optuna follows the file)."""
    import optuna

    from ascood.sweep.stages import tell_recorded

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    rows = {"completed": _rows(3, "completed"), "stopped-early": _rows(1, "stopped-early"),
            "failed": [{**r, "status_reason": "loss is nan"} for r in _rows(2, "failed")], None: []}[status]
    tell_recorded(storage, study.trials[0], rows_record(rows, OBJECTIVE), multi=False, reason="interrupted")
    [told] = optuna.load_study(study_name="s", storage=storage).trials
    assert told.number == trial.number and told.state.name == state
    if state == "COMPLETE":
        assert told.value == pytest.approx(83.0)
    if state == "PRUNED":
        assert told.intermediate_values == {1: pytest.approx(81.0)}
    if state == "FAIL":
        assert told.user_attrs["failure"] == ("loss is nan" if status else "interrupted")
