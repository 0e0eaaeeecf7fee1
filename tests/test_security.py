"""A local sweep is closed by design: nothing it starts listens off loopback, nothing answers an
unauthenticated client, and the Ray token is private — whatever the user's environment says."""

import contextlib
import ipaddress
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from conftest import stop_tree

pytestmark = pytest.mark.timeout(600)


def _routable_ip() -> str | None:
    """This machine's own address on its network (what another host would connect to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(ip).is_loopback else ip


def _listening(pid: int) -> set[tuple[str, int, str]]:
    out = set()
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((c.laddr.ip, c.laddr.port, p.name()))
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or (addr.version == 6 and addr.ipv4_mapped is not None and addr.ipv4_mapped.is_loopback)


def _unauthenticated_join(address: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_AUTH_MODE="disabled")
    code = f"import ray\nray.init(address={address!r}, logging_level='ERROR')\nprint('JOINED', ray.cluster_resources())"
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 124, exc.stdout or "", exc.stderr or "")


def test_a_local_sweep_listens_on_loopback_only_and_needs_the_token(tmp_path, benchmark_cache):
    sweep = {
        "name": "sec", "output": str(tmp_path / "out"), "datasets": [{"benchmark": "cmnist"}],
        "trial": {"epochs": 3, "batch_size": 16, "scorers": ["msp", "energy"]},
        "space": {"p_inv": {"low": 0.05, "high": 0.5}}, "num_samples": 1,
        "objective": {"metric": "val/auroc", "scorer": "energy"}, "final": None,
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 1},
    }
    path = tmp_path / "sec.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a user who turned Ray's auth off: ignored
    proc = subprocess.Popen([sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while not list((tmp_path / "out" / "trials").rglob("attempts.jsonl")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() - t0 < 300, "no trial started"
            time.sleep(1)
        sockets = _listening(proc.pid)
        names = {name for _, _, name in sockets}
        assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names

        open_ = sorted((ip, port, name) for ip, port, name in sockets if not _is_loopback(ip))
        assert not open_, f"listening off loopback: {open_}"
        ip = _routable_ip()
        if ip is not None:  # from the network side nothing answers, not even with an HTTP error
            for _, port, _ in sockets:
                with pytest.raises(requests.exceptions.ConnectionError):
                    requests.get(f"http://{ip}:{port}/", timeout=5)

        gcs_port = next(port for _, port, name in sockets if "gcs_server" in name)
        joined = _unauthenticated_join(f"127.0.0.1:{gcs_port}", tmp_path / "stranger")
        assert "JOINED" not in joined.stdout, "a client without the token joined the sweep's Ray"

        token = benchmark_cache / "ray" / "ray-auth-token"
        assert token.is_file() and stat.S_IMODE(token.stat().st_mode) == 0o600
        assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
        _, err = proc.communicate(timeout=480)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            stop_tree([proc.pid])
