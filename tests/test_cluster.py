"""Cluster runs: a real two-node Ray cluster on 127.0.0.1, real Jobs API, real token auth.

The head and one more node are each `ray start --block`ed from this venv (so jobs find the
project's python) in their own session and temp dir, with token authentication on, and stopped by
their own process groups (never `ray stop`, which would stop every Ray on the machine).

Node-local storage on one machine: the second node runs in its own mount namespace with a private
tmpfs over one directory (`unshare --mount`), so that directory really is node-local: the head and
the driver see the real directory, the second node an empty one of its own. An output there must
be refused before any trial starts. Every other directory is seen by both nodes, as on NFS.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import requests
import yaml
from conftest import free_port, stop_tree

REPO = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
pytestmark = pytest.mark.timeout(600)


def _mount_namespace(target: Path) -> list[str] | None:
    """The command prefix that gives a process its own mount namespace here (None: not possible)."""
    if not shutil.which("unshare"):
        return None
    for prefix in (["unshare", "--mount", "--propagation", "private"],
                   ["unshare", "--mount", "--map-root-user", "--propagation", "private"]):
        if subprocess.run([*prefix, "mount", "-t", "tmpfs", "tmpfs", str(target)], capture_output=True).returncode == 0:
            return prefix
    return None


class LocalCluster:
    """A head node and one worker node on this machine, with token authentication."""

    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.token = root / "token"
        self.token.write_text(secrets.token_hex(32))
        self.node_local = root / "node-local"  # a private tmpfs on the second node
        self.node_local.mkdir()
        self.tmp = root / "tmp"  # TMPDIR of nodes and drivers: trial scratch and study copies end with the cluster
        self.tmp.mkdir()
        self.gcs_port, self.dash_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PATH=f"{RAY.parent}:{env.get('PATH', '')}", RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN_PATH=str(self.token), RAY_USAGE_STATS_ENABLED="0", ASCOOD_CACHE=str(cache),
                   TMPDIR=str(self.tmp))
        self.env = env
        self.unshare = _mount_namespace(self.node_local)

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dash_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def client_env(self, *, token: bool = True) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["TMPDIR"] = str(self.tmp)
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token))
        return env

    def _start(self, name: str, args: list[str], prefix: list[str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115  (the node writes to it until it stops)
        cmd = [str(RAY), "start", "--block", *args]
        if prefix:  # mount a private tmpfs over node_local, then become the Ray node
            cmd = [*prefix, "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(self.node_local), *cmd]
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True, cwd=self.root))

    def start(self) -> None:
        self._start("head", [
            "--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash_port}",
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            "--num-cpus=1", f"--temp-dir={self.root / 'head'}", "--include-dashboard=true", "--disable-usage-stats",
        ])
        self._wait(self._dashboard_up, "the head's dashboard")
        self._start("worker", [
            f"--address={self.address}", "--num-cpus=1", f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self.root / 'worker'}", "--disable-usage-stats",
        ], prefix=self.unshare)
        self._wait(lambda: self.alive_nodes() == 2, "two alive nodes")

    def _wait(self, cond, what: str, timeout: float = 120) -> None:
        t0 = time.time()
        while not cond():
            for p in self.procs:
                assert p.poll() is None, f"a Ray node exited while waiting for {what}: {self.logs()}"
            assert time.time() - t0 < timeout, f"timed out waiting for {what}: {self.logs()}"
            time.sleep(0.5)

    def _dashboard_up(self) -> bool:
        try:
            return requests.get(f"{self.jobs_address}/api/version", timeout=2).status_code in (200, 401)
        except requests.RequestException:
            return False

    def alive_nodes(self) -> int:
        headers = {"Authorization": f"Bearer {self.token.read_text()}"}
        try:
            r = requests.get(f"{self.jobs_address}/api/v0/nodes", headers=headers, timeout=5)
            nodes = r.json()["data"]["result"]["result"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return 0
        return sum(n.get("state") == "ALIVE" for n in nodes)

    def node_of(self, pid: int) -> str | None:
        """Which node ran a worker process: Ray names each worker's log after its pid."""
        found = [node for node in ("head", "worker") if list((self.root / node).glob(f"session_*/logs/worker-*-{pid}.out"))]
        return found[0] if len(found) == 1 else None

    def logs(self) -> str:
        return " | ".join(f.read_text()[-1500:] for f in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM each node's process group, SIGKILL what is left; every descendant by PID too."""
        stop_tree([p.pid for p in self.procs], grace_s=15)
        for p in self.procs:
            p.wait(timeout=15)


@pytest.fixture(scope="module")
def cluster(benchmark_cache):
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths live under it
    c = LocalCluster(root, benchmark_cache)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _sweep_file(path: Path, output: str, name: str = "c") -> Path:
    """The smallest real sweep: one embedded dataset, two trials, one per node. Each trial is long
    enough (3 epochs) that the second starts while the first holds its node's only CPU; with
    one-epoch trials on a loaded machine the first could end before the second was placed, and
    Tune would then reuse the first node's actor for it."""
    data = {
        "name": name,
        "output": output,
        "datasets": [{"benchmark": "cmnist"}],
        "trial": {"epochs": 3, "batch_size": 32, "scorers": ["msp", "energy"], "eval_batch_size": 1024},
        "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}},
        "num_samples": 2,
        "objective": {"metric": "val/auroc", "scorer": "energy"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 2},
        "final": None,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args, env: dict, timeout: float = 480) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ascood.cli.sweep", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _completed_trials(results: str) -> pd.DataFrame:
    df = pd.read_parquet(results)
    assert (df["status"] == "completed").all() and not df.empty
    return df


def _study_states(db: Path) -> list[str]:
    study = optuna.load_study(study_name="c-cmnist", storage=f"sqlite:///{db}")
    return sorted(t.state.name for t in study.trials)


# ---- the cluster files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_own_validation(name):
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster" / name).read_text())
    validate_config(prepare_config(raw))  # what `ray up` does: defaults of the provider, then Ray's schema
    types = raw["available_node_types"]
    gpu_types = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert len(gpu_types) >= 2 and types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    spot = [t["node_config"] for t in types.values()
            if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
            or any(s.get("provisioningModel") == "SPOT" for s in t["node_config"].get("scheduling", []))]
    assert spot, "a spot GPU worker type"
    assert "RAY_AUTH_MODE=token" in " ".join(raw["docker"]["run_options"])
    # the same validation does reject a broken config (a misspelt field of a node type)
    broken = yaml.safe_load((REPO / "cluster" / name).read_text())
    broken["available_node_types"]["gpu_1x"]["min_worker"] = 1
    with pytest.raises(ValidationError):
        validate_config(prepare_config(broken))


def test_kuberay_manifests_have_the_required_fields():
    def check_cluster_spec(spec: dict) -> None:
        head = spec["headGroupSpec"]
        assert isinstance(head["rayStartParams"], dict)
        [head_container] = head["template"]["spec"]["containers"]
        assert head_container["image"] and {"name": "RAY_AUTH_MODE", "value": "token"} in head_container["env"]
        assert spec["workerGroupSpecs"]
        for group in spec["workerGroupSpecs"]:
            assert group["groupName"] and group["minReplicas"] <= group["maxReplicas"]
            assert isinstance(group["rayStartParams"], dict)
            [c] = group["template"]["spec"]["containers"]
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1 and c["image"] == head_container["image"]
            assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/shared"}

    docs = list(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    [rc] = [d for d in docs if d["kind"] == "RayCluster"]
    [pvc] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert rc["apiVersion"] == "ray.io/v1" and rc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    check_cluster_spec(rc["spec"])

    [job] = yaml.safe_load_all((REPO / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("python -m ascood.cli.sweep ") and "--address auto" in entry and "--output /shared/" in entry
    sweep = entry.split()[3]
    assert (REPO / sweep.removeprefix("/app/")).is_file(), "the RayJob names a sweep file the image holds"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    check_cluster_spec(job["spec"]["rayClusterSpec"])


def test_dockerfile_installs_the_projects_own_pins():
    text = (REPO / "cluster" / "Dockerfile").read_text()
    base = [ln for ln in text.splitlines() if ln.startswith("FROM ")]
    assert base == ["FROM python:3.11-slim-bookworm"]  # pyproject: requires-python >=3.11,<3.12
    assert "COPY pyproject.toml" in text and "pip install --no-cache-dir ." in text
    assert "==" not in text, "no second list of pins that could drift from pyproject.toml"


def test_fractional_gpus_share_a_gpu_and_map_to_tune_resources(tmp_path):
    from ascood.sweep.resources import concurrency, trial_resources
    from ascood.sweep.spec import Resources, SweepSpec

    base = yaml.safe_load(_sweep_file(tmp_path / "s.yaml", str(tmp_path / "out")).read_text())
    spec = SweepSpec.model_validate({**base, "resources": {"gpus_per_process": 0.25, "cpus_per_process": 2,
                                                           "max_concurrent_trials": 16}})
    assert trial_resources(spec) == ({"cpu": 2, "gpu": 0.25}, 2)
    assert concurrency(spec, cluster_cpus=64, cluster_gpus=2) == 8  # four trials per GPU
    multi = SweepSpec.model_validate({**base, "resources": {"processes_per_trial": 4, "gpus_per_process": 1,
                                                            "cpus_per_process": 4, "max_concurrent_trials": 8}})
    assert trial_resources(multi)[0] == {"cpu": 0.1}  # the Train workers ask for the GPUs themselves
    assert concurrency(multi, cluster_cpus=96, cluster_gpus=8) == 2
    with pytest.raises(ValueError, match="exactly 1 GPU per process"):
        Resources(processes_per_trial=2, gpus_per_process=0.5)
    with pytest.raises(ValueError, match="exactly 1 GPU per process"):
        Resources(processes_per_trial=2, gpus_per_process=2)  # DDP on LOCAL_RANK vs the GPU Ray gave the worker
    for g in (1.5, 2):
        with pytest.raises(ValueError, match="at most 1"):
            Resources(gpus_per_process=g)
    for n, g in ((1, 0), (1, 0.5), (1, 1), (2, 0), (2, 1)):
        assert Resources(processes_per_trial=n, gpus_per_process=g).gpus_per_process == g


# ---- the cluster -------------------------------------------------------------------------------


def test_submitted_sweep_succeeds_with_results_on_the_shared_output(cluster, tmp_path):
    out = tmp_path / "shared" / "sweep"
    sweep = _sweep_file(tmp_path / "c.yaml", str(out))
    proc = _cli("submit", sweep, "--address", cluster.jobs_address, "--follow", env=cluster.client_env())
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-2000:], cluster.logs())
    job_id = proc.stdout.splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert proc.stdout.rstrip().endswith(f"job {job_id}: SUCCEEDED")
    assert "best per dataset" in proc.stdout  # the sweep's own summary, streamed from the job

    df = _completed_trials(str(out / "results"))
    assert df["trial_id"].nunique() == 2 and set(df["stage"]) == {"search"}
    assert _study_states(out / "optuna.db") == ["COMPLETE", "COMPLETE"]
    assert len(list((out / "trials").rglob("checkpoint.pt"))) == 2
    assert (out / "sweep.yaml").read_text() == sweep.read_text()
    pids = [json.loads(f.read_text().splitlines()[0])["pid"] for f in (out / "trials").rglob("attempts.jsonl")]
    assert sorted(cluster.node_of(p) or "?" for p in pids) == ["head", "worker"], "one trial on each node"

    status = _cli("status", job_id, "--address", cluster.jobs_address, env=cluster.client_env())
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}: SUCCEEDED"), status
    logs = _cli("logs", job_id, "--address", cluster.jobs_address, env=cluster.client_env())
    assert logs.returncode == 0 and "best per dataset" in logs.stdout
    # the address may come from the environment, as for Ray's own CLI
    by_env = _cli("status", job_id, env={**cluster.client_env(), "RAY_API_SERVER_ADDRESS": cluster.jobs_address})
    assert by_env.returncode == 0 and "SUCCEEDED" in by_env.stdout
    stopped = _cli("stop", job_id, "--address", cluster.jobs_address, env=cluster.client_env())
    assert stopped.returncode == 0 and "already ended" in stopped.stdout

    # without the token the cluster answers 401: one line naming the address and the remedy
    line = _one_line_error(_cli("status", job_id, "--address", cluster.jobs_address,
                                env=cluster.client_env(token=False)))
    assert cluster.jobs_address in line and "401" in line and "RAY_AUTH_MODE=token" in line
    line = _one_line_error(_cli("status", "raysubmit_nosuchjob", "--address", cluster.jobs_address,
                                env=cluster.client_env()))
    assert "no such job" in line
    closed = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(_cli("status", job_id, "--address", closed, env=cluster.client_env()))
    assert closed in line and "cannot reach" in line
    line = _one_line_error(_cli("submit", sweep, env=cluster.client_env()))
    assert "--address" in line


def test_address_mode_with_an_object_storage_uri(cluster, tmp_path):
    """`--address` from outside the cluster; the output is a URI (file:// takes the object-storage
    path through pyarrow: checkpoints kept from node-local scratch, the study copied out)."""
    out = tmp_path / "bucket" / "sweep"
    sweep = _sweep_file(tmp_path / "c.yaml", "runs/ignored")
    proc = _cli(sweep, "--address", cluster.address, "--output", f"file://{out}", "--no-progress",
                env=cluster.client_env())
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "best per dataset" in proc.stdout
    df = _completed_trials(f"file://{out}/results")
    assert df["trial_id"].nunique() == 2
    assert _study_states(out / "optuna.db") == ["COMPLETE", "COMPLETE"]
    kept = sorted((out / "trials").rglob("checkpoint.pt"))
    assert len(kept) == 2 and all((k.parent / "attempts.jsonl").is_file() for k in kept)
    assert (out / "ray").is_dir()  # Tune's experiment state, for --resume
    assert not (REPO / "runs" / "ignored").exists()
    summary = _cli("summary", f"file://{out}", "--json", env=cluster.client_env())
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)[0]["benchmark"] == "cmnist"
    # --resume starts from the study kept on the output and leaves it whole
    resumed = _cli(sweep, "--address", cluster.address, "--output", f"file://{out}", "--resume", "--no-progress",
                   env=cluster.client_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _study_states(out / "optuna.db") == ["COMPLETE", "COMPLETE"]
    assert pd.read_parquet(f"file://{out}/results").equals(df)


def test_node_local_output_is_refused_before_any_trial(cluster, tmp_path):
    if cluster.unshare is None:
        pytest.skip("no mount namespaces here (unshare): a node-local directory cannot be made on one machine")
    out = cluster.node_local / f"sweep-{tmp_path.name}"
    sweep = _sweep_file(tmp_path / "c.yaml", str(out))

    line = _one_line_error(_cli(sweep, "--address", cluster.address, "--no-progress", env=cluster.client_env()))
    assert f"output {out}: node-local" in line and "does not see it" in line and "s3://" in line
    assert not (out / "sweep.yaml").exists() and not (out / "results").exists()

    proc = _cli("submit", sweep, "--address", cluster.jobs_address, "--follow", env=cluster.client_env())
    assert proc.returncode == 1, (proc.stdout[-3000:], proc.stderr[-2000:])
    assert "FAILED" in proc.stdout.splitlines()[-1]
    assert f"output {out}: node-local" in proc.stdout
    assert not (out / "sweep.yaml").exists() and not (out / "results").exists() and not (out / "trials").exists()


def test_relative_output_is_refused_before_submission(tmp_path):
    sweep = _sweep_file(tmp_path / "c.yaml", "runs/relative")
    line = _one_line_error(_cli("submit", sweep, "--address", "http://127.0.0.1:9", env=dict(os.environ)))
    assert "relative" in line and "--output" in line
