import contextlib
import os
import signal
import socket

import psutil
import pytest


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
