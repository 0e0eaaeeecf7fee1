"""Exactly once across repeated crashes: the chaos benchmark with two seeded kills (of two of its
kinds: at a random moment, right after a trial's end, right after a stage's)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import chaos


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_sweep_killed_twice_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    datasets = ("cmnist[classes=2]", "mnist6")  # a parametrized name: its safe on-disk names resume too
    audit = chaos.run_chaos(tmp_path, kills=2, seed=3, samples=3, max_wait_s=40.0, datasets=datasets)
    assert audit.search_trials == dict.fromkeys(datasets, 3), audit
    assert audit.study_trials == dict.fromkeys(datasets, 3) and audit.study_running == 0, audit
    assert audit.robust_trials == 3 and audit.retrained_runs == 0, audit
    assert audit.duplicated_rows == 0 and audit.running_rows == 0 and audit.mixed_status_files == 0, audit
    assert not audit.changed_after_complete and not audit.disagreements, audit
    assert set(audit.statuses) <= {"completed", "stopped-early"}, audit  # (ASHA stops some)
