"""How a finished trial ended, decided in one place: the results callback, the progress display and
the Optuna bridge all ask `trial_outcome`.

A trial's last report says it: `status: failed` (it diverged or crashed) or no report at all is a
failure; a last evaluated epoch below the planned epochs means the scheduler stopped it early;
otherwise it completed.
"""

from __future__ import annotations

from typing import Literal

Outcome = Literal["completed", "stopped-early", "failed"]
GAIN_PREFIX = "gain/"  # a joint trial reports `gain/<dataset>`, kept as user attributes of its Optuna trial


def trial_outcome(last_result: dict | None, *, error: bool = False) -> Outcome:
    """The outcome of a finished trial from its last reported result (`error`: Tune saw it raise)."""
    if error or not last_result or last_result.get("status") == "failed":
        return "failed"
    if last_result.get("epoch", 0) < last_result.get("epochs", 1):
        return "stopped-early"
    return "completed"
