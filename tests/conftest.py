import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml


@pytest.fixture(scope="session", autouse=True)
def benchmark_cache(tmp_path_factory):
    """One benchmark cache for the whole session (subprocesses inherit it through the env)."""
    path = tmp_path_factory.mktemp("ascood-cache")
    old = os.environ.get("ASCOOD_CACHE")
    os.environ["ASCOOD_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ASCOOD_CACHE", None)
    else:
        os.environ["ASCOOD_CACHE"] = old


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cpu(script, *args, env: dict | None = None, nproc: int = 2) -> subprocess.CompletedProcess:
    """`script args…` under torchrun with `nproc` gloo ranks on the CPU (even on a GPU machine: NCCL
    rejects two ranks on one GPU), rendezvous on 127.0.0.1."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1", **(env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def stop_tree(pids: list[int], *, grace_s: float = 0.0) -> None:
    """Stop processes that each lead their own session, with every descendant (by PID, never by
    name): SIGTERM to each process group and `grace_s` to exit, then SIGKILL to what is left."""
    tree = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree += [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    alive = tree
    if grace_s > 0:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=30)


@pytest.fixture(scope="module")
def setting():
    """A fixed untrained small CNN with the ASCOOD head and its outputs on random inputs: 80 ID
    training samples (4 classes) and 40 test samples, what the scorer tests fit and score."""
    import torch

    from ascood.models import create_model
    from ascood.scorers import Outputs

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, feature_norm="zscore", sigma=0.5).eval()
    with torch.no_grad():
        xs = torch.randn(120, 3, 32, 32)
        lg, h = model.forward_with_features(xs)
        train = Outputs(lg[:80], h[:80], torch.arange(80) % 4)
        test = Outputs(lg[80:], h[80:], torch.zeros(40, dtype=torch.long))
    return model, train, test


# `.item()`/`float(t)`/`bool(t)` read a device value (a host sync); `lift_fresh` is `torch.tensor(python data)`,
# a host-to-device copy every step.
HOST_OPS = {"_local_scalar_dense", "item", "lift_fresh", "lift_fresh_copy"}


def recorded_ops():
    """A dispatch mode that records the name of every aten op run under it (`.names`)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    return Ops()


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory) -> Path:
    """A tiny finished sweep (about a minute on 2 cores) with every stage a report draws from: a
    search, final seeds, a CE baseline method and the transfer stage (whose runs are reused), tracked by
    TensorBoard, MLflow and W&B. Shared by the report, tracking, dashboard and query-engine tests."""
    root = tmp_path_factory.mktemp("finished_sweep")
    spec = {
        "name": "tiny",
        "output": str(root / "out"),
        "datasets": [{"benchmark": "cmnist[classes=2]"}],
        "trial": {"epochs": 1, "batch_size": 64, "scorers": ["msp", "energy"], "eval_batch_size": 1024},
        "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}},
        "num_samples": 3,
        "objective": {"metric": "val/auroc", "scorer": "energy"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 2},
        "final": {"seeds": [0, 1]},
        "baselines": ["ce"],
        "transfer": {"top_k": 1, "seeds": [0, 1], "defaults": True, "baseline": True},
        "tracking": ["tensorboard", "mlflow", "wandb"],
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    # on a pseudo-terminal, so the live display runs as a user sees it (tests/test_progress.py reads it)
    rc, screen = run_in_pty([sys.executable, "-m", "ascood.cli.sweep", str(path)], timeout=900)
    (root / "terminal.txt").write_text(screen)
    assert rc == 0, screen[-3000:]
    return root / "out"


def run_in_pty(cmd: list[str], *, timeout: float, cols: int = 140, rows: int = 50) -> tuple[int, str]:
    """(exit code, everything written) of `cmd` run on a pseudo-terminal of `cols`×`rows` as its
    stdin, stdout and stderr, in its own session; stopped with its descendants past `timeout`.
    Reading ends when the command has exited and its output has gone quiet (processes it started,
    such as Ray's, may keep the terminal open)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"},
                            start_new_session=True)
    os.close(slave)
    out, deadline, quiet_since = bytearray(), time.monotonic() + timeout, None
    try:
        while True:
            if time.monotonic() > deadline:
                stop_tree([proc.pid])
                raise AssertionError(f"{cmd}: still running after {timeout} s; last output: {out[-2000:]!r}")
            ready, _, _ = select.select([master], [], [], 0.2)
            data = b""
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                out += data
            if proc.poll() is None or data:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                break
    finally:
        os.close(master)
    return proc.wait(), out.decode(errors="replace")


def wandb_history(path) -> tuple[dict, list[dict]]:
    """(run record fields, history rows) of a W&B offline `.wandb` file, decoded with W&B's own
    protobuf schema (wandb 0.31 ships no Python reader): the file is a LevelDB-style log of 32 KiB
    blocks after a 7-byte header, each chunk a 7-byte header (crc, length, type: 1 full, 2 first,
    3 middle, 4 last) and its bytes."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf, run, history = 32768, 7, b"", {}, []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif record.WhichOneof("record_type") == "run":
                run = {"id": record.run.run_id, "name": record.run.display_name, "group": record.run.run_group,
                       "job_type": record.run.job_type}
    return run, history
