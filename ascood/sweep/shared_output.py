"""Sweep outputs on a cluster: where they may live, the check that every node sees them, and the
two kinds of files that cannot be written to object storage in place (SQLite, torch checkpoints).

On several nodes every trial writes its Parquet rows and checkpoints from whichever node runs it,
so the output must be one place that every node reaches: a shared filesystem mounted at the same
path everywhere (NFS, EFS, Filestore, a FUSE mount) or object storage (`s3://`, `gs://`). That is
checked before any trial starts, from every alive node, by reading a marker the driver wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import sqlite3
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
from ray.tune import Callback

from ascood import storage

MARKER = ".ascood-shared"  # stays: trials check it on their node
CHECK = ".ascood-check"  # the one-off check before the sweep
STUDY_FILE = "optuna.db"


class OutputNotShared(ValueError):
    """The output cannot serve a cluster sweep (node-local, not writable); one line, exit code 2."""


def location(output: str) -> str:
    """A URI as given, a local path made absolute (trials run in other directories)."""
    return output if storage.is_uri(output) else str(Path(output).expanduser().absolute())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _key(out: str) -> str:
    return hashlib.sha256(out.encode()).hexdigest()[:16]


def scratch_dir(out: str) -> Path:
    """Node-local working copies for an object-storage output (same path on every node)."""
    return Path(tempfile.gettempdir()) / "ascood-scratch" / _key(out)


# ---- the check before any trial starts ------------------------------------------------------


def _probe(marker: str, token: str) -> tuple[str, str, str | None]:
    """Runs on one node: does it see the driver's marker, and can it write next to it?"""
    import ray

    node = ray.get_runtime_context().get_node_id()
    where = f"{socket.gethostname()} ({node[:8]})"
    try:
        seen = storage.read_text(marker)
    except OSError as exc:
        return node, where, f"cannot read it: {_first_line(exc)}"
    if seen is None:
        return node, where, "does not see it"
    if seen.strip() != token:
        return node, where, "sees a different directory at that path"
    mine = f"{marker}-{node[:16]}"
    try:
        storage.write_text(mine, node)
        storage.delete(mine)
    except OSError as exc:
        return node, where, f"cannot write to it: {_first_line(exc)}"
    return node, where, None


def check_shared(out: str, token: str, *, timeout_s: float = 300.0) -> int:
    """Refuse an output that some alive node cannot see or write; returns the number of nodes.

    Needs `ray.init` done. The driver writes a marker holding `token`; a task pinned to each alive
    node (NodeAffinitySchedulingStrategy, zero CPUs so busy nodes still run it) must read the same
    token and write a file beside it. This marker is removed again; `write_marker` leaves another
    that trials check on their own node (nodes that join later, e.g. through the autoscaler).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = storage.join(out, CHECK)
    try:
        storage.write_text(marker, token)
    except OSError as exc:
        raise OutputNotShared(f"output {out}: not writable from the driver ({_first_line(exc)})") from None
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(marker, token)
            for n in nodes
        ]
        try:
            answers = ray.get(refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise OutputNotShared(f"output {out}: not every node answered the storage check within {timeout_s:g} s") from None
    finally:
        with contextlib.suppress(OSError):
            storage.delete(marker)
    for _, where, problem in answers:
        if problem is not None:
            kind = "node-local" if problem in ("does not see it", "sees a different directory at that path") else "not usable"
            raise OutputNotShared(
                f"output {out}: {kind} on this cluster: node {where} {problem}; a multi-node sweep needs "
                "a path every node mounts (NFS, EFS, Filestore) or object storage (s3://, gs://)"
            )
    return len(answers)


def read_marker(out: str) -> str | None:
    text = storage.read_text(storage.join(out, MARKER))
    return text.strip() if text else None


def write_marker(out: str, token: str) -> None:
    storage.write_text(storage.join(out, MARKER), token)


def verify_marker(out: str, token: str) -> None:
    """In a trial: refuse to write into an output this node does not share with the driver."""
    try:
        seen = storage.read_text(storage.join(out, MARKER))
    except OSError as exc:
        seen, why = None, _first_line(exc)
    else:
        why = "marker missing" if seen is None else "another directory at that path"
    if seen is None or seen.strip() != token:
        raise OutputNotShared(f"output {out} is not shared with node {socket.gethostname()} ({why}); "
                              "use shared or object storage")


# ---- trial directories on object storage ----------------------------------------------------


def trial_dirs(out: str, relative: str) -> tuple[Path, str | None]:
    """(where the trial works, where its files are kept): the same local directory for a local
    output; for a URI, a node-local working copy and the object-storage directory."""
    if not storage.is_uri(out):
        return Path(out) / relative, None
    return scratch_dir(out) / relative, storage.join(out, relative)


def pull(remote: str | None, local: Path) -> None:
    """Before a (re)start: the trial's kept checkpoint, so a retry on another node resumes it."""
    if remote is None:
        return
    shutil.rmtree(local, ignore_errors=True)
    storage.copy_tree(remote, str(local))


def push(local: Path, remote: str | None) -> None:
    """After a checkpoint: keep the trial's files where every node (and the user) finds them."""
    if remote is not None and local.is_dir():
        storage.copy_tree(str(local), remote)


# ---- the Optuna study -----------------------------------------------------------------------


class StudyMirror:
    """The Optuna studies of a cluster sweep: live SQLite on the driver's own disk, copied to
    OUT/optuna.db after every finished trial and every stage.

    SQLite cannot live on object storage, and on NFS its locking is unreliable; only the Tune
    driver talks to the study, so one writer with a copy is enough. The copy is the truth: a
    resumed driver (on any machine) starts from it. The local path is the same on every machine,
    because Tune's saved searcher state names it.
    """

    def __init__(self, out: str):
        self.remote = storage.join(out, STUDY_FILE)
        self.local = Path(tempfile.gettempdir()) / "ascood-studies" / _key(out) / STUDY_FILE

    @property
    def url(self) -> str:
        return f"sqlite:///{self.local}"

    def pull(self) -> None:
        self.local.parent.mkdir(parents=True, exist_ok=True)
        self.local.unlink(missing_ok=True)
        fs, path = storage.resolve(self.remote)
        if fs.get_file_info(path).type == pafs.FileType.File:
            pafs.copy_files(path, str(self.local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())

    def push(self) -> None:
        if not self.local.exists():
            return
        snapshot = self.local.with_name(f".{STUDY_FILE}.snapshot{os.getpid()}")
        src, dst = sqlite3.connect(self.local), sqlite3.connect(snapshot)
        try:
            src.backup(dst)  # a consistent copy even while the study is open
        finally:
            src.close()
            dst.close()
        fs, path = storage.resolve(self.remote)
        try:
            if isinstance(fs, pafs.LocalFileSystem):
                tmp = f"{path}.tmp{os.getpid()}"
                shutil.copyfile(snapshot, tmp)
                os.replace(tmp, path)
            else:
                pafs.copy_files(str(snapshot), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        finally:
            snapshot.unlink(missing_ok=True)


class StudySync(Callback):
    """A Tune callback that copies the study out after every finished trial and at the end."""

    def __init__(self, mirror: StudyMirror):
        self.mirror = mirror

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.mirror.push()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.mirror.push()

    def on_experiment_end(self, trials, **info):
        self.mirror.push()
