"""What makes a directory a run: its checkpoint. Kept apart from the training code so that a CLI
refuses a directory that is not a run before it imports torch."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "checkpoint.pt"


class RunDirError(ValueError):
    """A run directory without a usable checkpoint; one line naming the path."""


def checkpoint_of(run_dir: Path) -> Path:
    """The run's checkpoint file, or a RunDirError saying there is none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {CHECKPOINT} (not a run directory, or the run never finished an epoch)")
    return path
