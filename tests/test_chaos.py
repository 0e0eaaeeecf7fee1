"""Exactly once across repeated crashes: the chaos benchmark's --quick (two seeded kills, of two of
its kinds: at a random moment, right after a trial's end, right after a stage's), and the rows it
keeps: a resumed run measures nothing again, --table prints the audit."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import rows

BENCH = rows.REPO / "benchmarks"


def _chaos(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "chaos.py"), *args], capture_output=True, text=True,
                          cwd=BENCH.parent, timeout=1400)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_sweep_killed_twice_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    proc = _chaos("--quick", "--work", str(tmp_path))
    kept = rows.read(tmp_path / "rows.jsonl")
    assert len(kept) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    [audit] = kept
    datasets = ("cmnist[classes=2]", "mnist6")  # a parametrized name: its safe on-disk names resume too
    assert audit["seed"] == 3 and audit["quick"] is True and audit["ok"] is True, audit
    assert audit["kills"] == 2 and len(audit["kill_kinds"]) == len(audit["kill_moments_s"]) == 2, audit
    assert audit["settings"]["datasets"] == ",".join(datasets) and audit["settings"]["samples"] == 3, audit
    assert audit["search_trials"] == dict.fromkeys(datasets, 3), audit
    assert audit["study_trials"] == dict.fromkeys(datasets, 3) and audit["study_running"] == 0, audit
    assert audit["robust_trials"] == 3 and audit["retrained_runs"] == 0, audit
    assert audit["duplicated_rows"] == 0 and audit["running_rows"] == 0 and audit["mixed_status_files"] == 0, audit
    assert not audit["changed_after_complete"] and not audit["disagreements"], audit
    assert set(audit["statuses"]) <= {"completed", "stopped-early"}, audit  # (ASHA stops some)
    assert audit["wall_s"] > 0 and audit["utc"] and "loadavg_1m" in audit and "commit" in audit, audit
    assert proc.returncode == 0 and "nothing lost, nothing duplicated, nothing left running" in proc.stdout, proc.stderr[-3000:]

    before = (tmp_path / "rows.jsonl").read_text()
    again = _chaos("--quick", "--work", str(tmp_path), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "rows.jsonl").read_text() == before  # nothing measured again

    shown = _chaos("--work", str(tmp_path), "--table")
    assert shown.returncode == 0 and "| | seed 3 |" in shown.stdout and "| audit | clean |" in shown.stdout, shown.stdout
