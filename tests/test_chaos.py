"""Exactly once across repeated crashes: the chaos benchmark with two seeded kills."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import chaos


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_sweep_killed_twice_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    audit = chaos.run_chaos(tmp_path, kills=2, seed=3, samples=3, max_wait_s=40.0)
    assert audit.search_trials == {"cmnist": 3, "mnist6": 3}, audit
    assert audit.study_trials == {"cmnist": 3, "mnist6": 3} and audit.study_running == 0, audit
    assert audit.robust_trials == 3 and audit.retrained_runs == 0, audit
    assert audit.duplicated_rows == 0 and audit.running_rows == 0 and audit.mixed_status_files == 0, audit
    assert not audit.changed_after_complete, audit
    assert set(audit.statuses) == {"completed"}, audit
