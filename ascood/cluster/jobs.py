"""A sweep as a Ray Job: submit it to a cluster's Jobs API, then follow, inspect or stop it.

The job's working directory is a snapshot of this project (without .venv, .git, outputs) plus the
sweep file, so the cluster runs exactly the code and file submitted; the dependencies come from
the cluster's image (cluster/Dockerfile installs the same pins). The job's driver runs the sweep
with `--address auto`, i.e. on the cluster it was submitted to.

Token authentication is Ray's own: with `RAY_AUTH_MODE=token` in the environment, Ray's client
sends the token from `RAY_AUTH_TOKEN`, the file named by `RAY_AUTH_TOKEN_PATH`, or
`~/.ray/auth_token`. Nothing here reads or stores a credential.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
# Never shipped with a job: environments, version control, outputs, caches.
EXCLUDES = [".venv", "venv", ".git", "runs", "__pycache__", "*.pyc", "*.egg-info", ".pytest_cache",
            "build", "dist", ".mypy_cache", ".ruff_cache"]
JOB_DIR = ".ascood-job"  # where the sweep file sits inside the job's working directory


class JobError(Exception):
    """Bad input, an unreachable cluster, a refused token, an unknown job: one line, exit code 2."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_address(flag: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS (Ray's own order for the two)."""
    for value in (flag, *(os.environ.get(k) for k in ADDRESS_ENV)):
        if value:
            return value
    raise JobError("--address: no Jobs API address (http://HEAD:8265); give --address or set RAY_API_SERVER_ADDRESS")


def connect(address: str):
    """A JobSubmissionClient for `address`, or a one-line reason why not."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}  # Ray would prefer them over `address`
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        status = "401" if "required" in str(exc) else "403"
        raise JobError(
            f"--address {address}: the cluster refused the request ({status}, token authentication): "
            "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token"
        ) from None
    except ConnectionError:
        raise JobError(f"--address {address}: cannot reach the Ray Jobs API (is the head up, and port 8265 "
                       "open or tunnelled?)") from None
    except Exception as exc:  # a malformed address, a non-Ray server, a version mismatch
        raise JobError(f"--address {address}: {_first_line(exc)}") from None
    finally:
        os.environ.update(saved)


def _call(what: str, job_id: str, fn, *args):
    from ray.exceptions import AuthenticationError

    try:
        return fn(job_id, *args)
    except AuthenticationError:
        raise JobError(f"job {job_id}: the cluster refused the request (token authentication): "
                       "set RAY_AUTH_MODE=token and the cluster's token") from None
    except ConnectionError as exc:
        raise JobError(f"job {job_id}: {what}: lost the connection ({_first_line(exc)})") from None
    except RuntimeError as exc:
        text = str(exc)
        if "404" in text or "does not exist" in text:
            raise JobError(f"job {job_id}: no such job on this cluster") from None
        raise JobError(f"job {job_id}: {what}: {_first_line(exc)}") from None


@dataclass(frozen=True)
class Submission:
    sweep_file: Path
    project: Path
    resume: bool = False
    fresh: bool = False
    data_root: str | None = None
    output: str | None = None


def entrypoint(sub: Submission) -> str:
    """The job's command: the same CLI, run on the cluster it was submitted to."""
    args = ["python", "-m", "ascood.cli.sweep", f"{JOB_DIR}/{sub.sweep_file.name}", "--address", "auto", "--no-progress"]
    if sub.resume:
        args.append("--resume")
    if sub.fresh:
        args.append("--fresh")
    if sub.data_root:
        args += ["--data-root", sub.data_root]
    if sub.output:
        args += ["--output", sub.output]
    return shlex.join(args)


def stage_working_dir(sub: Submission, into: Path) -> Path:
    """Copy the project (minus EXCLUDES) and the sweep file into a fresh directory for upload."""
    root = into / "project"
    shutil.copytree(sub.project, root, ignore=shutil.ignore_patterns(*EXCLUDES), symlinks=True)
    (root / JOB_DIR).mkdir(exist_ok=True)
    shutil.copyfile(sub.sweep_file, root / JOB_DIR / sub.sweep_file.name)
    return root


def submit(client, sub: Submission, *, env_vars: dict[str, str] | None = None) -> str:
    """Upload the snapshot and start the job; returns its submission id."""
    with tempfile.TemporaryDirectory(prefix="ascood-submit-") as tmp:
        root = stage_working_dir(sub, Path(tmp))
        runtime_env: dict = {"working_dir": str(root), "excludes": EXCLUDES}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        try:
            return client.submit_job(entrypoint=entrypoint(sub), runtime_env=runtime_env,
                                     metadata={"ascood_sweep": sub.sweep_file.name})
        except Exception as exc:
            raise JobError(f"submit {sub.sweep_file}: {_first_line(exc)}") from None


def status(client, job_id: str):
    """The job's details (status, message, entrypoint, times)."""
    return _call("status", job_id, client.get_job_info)


def logs(client, job_id: str) -> str:
    return _call("logs", job_id, client.get_job_logs)


def follow(client, job_id: str) -> Iterator[str]:
    """The job's log as it is written, until the job ends."""
    status(client, job_id)  # an unknown id is one line, not a websocket error

    loop = asyncio.new_event_loop()
    agen = client.tail_job_logs(job_id)
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
            except RuntimeError as exc:
                raise JobError(f"job {job_id}: logs: {_first_line(exc)}") from None
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


def stop(client, job_id: str) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    return bool(_call("stop", job_id, client.stop_job))
