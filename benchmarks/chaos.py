"""Chaos benchmark: a small real sweep SIGKILLed as a whole process tree K times, at moments drawn
over the whole sweep, resumed after each kill, then audited.

    python benchmarks/chaos.py --kills 10 [--seed 0 [1 …]] [--samples 10] [--datasets cmnist,mnist6] [--work DIR]
        [--output DIR] [--record FILE] [--resume] [--table [FILE]] [--quick]

Two embedded datasets (cmnist, mnist6), search (TPE + ASHA) + final + CE baseline + robust +
transfer stages. Each kill is of one kind, drawn in turn from a seeded shuffle: `time` (a random
moment 0.5–max-wait s into the run: start-up, inside trials), `trial-end` (0–1 s after a trial's
file turns terminal: while ASHA's stops and trials' ends are written, before Tune saves its state
again) and `handover` (0–1 s after a stage's phase ends: while the next stages start). After the
last kill the sweep is resumed to the end and checked: every dataset's search, and the robust
study, hold exactly `samples` trials in Parquet and in Optuna, each with one terminal status and
none RUNNING; Parquet's status and Optuna's state agree for every trial; no result row is
duplicated (stage, run, epoch, split, OOD set, scorer) and none says `running`; no run (config and
seed) was trained to the end by two trials (a later stage records it, `reused_from`); every trial
file that was complete at a kill is byte-identical at the end.

Each seed is a case: its audit is a row of `DIR/rows.jsonl` (benchmarks/rows.py) as soon as its
sweep is audited, and `--record FILE` appends it to FILE too. `--resume` runs only the seeds not
there (an interrupted seed starts again from nothing: a chaos run is not resumed); `--table FILE`
prints the table of a recorded file. `--quick`: 2 kills, seed 3, 3 trials per search, cmnist[classes=2]
and mnist6 (what tests/test_chaos.py runs). Exit status 1 when an audit fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import psutil
import rows
import yaml

from ascood.sweep.paths import safe_name

DATASETS = ("cmnist", "mnist6")
TERMINAL = {"completed", "stopped-early", "failed"}
STATE = {"completed": "COMPLETE", "stopped-early": "PRUNED", "failed": "FAIL"}  # Parquet status -> Optuna state
KINDS = ("time", "trial-end", "handover")
KEY = ["stage", "run_id", "epoch", "split", "ood_set", "scorer"]


@dataclass
class Audit:
    kills: int
    kill_moments_s: list[float]
    kill_kinds: list[str]
    wall_s: float
    search_trials: dict[str, int]
    study_trials: dict[str, int]
    study_running: int
    statuses: dict[str, int]
    duplicated_rows: int
    running_rows: int
    mixed_status_files: int
    complete_files_at_kills: int
    robust_trials: int = 0
    retrained_runs: int = 0
    changed_after_complete: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)  # trials whose Parquet status and Optuna state differ

    def ok(self, samples: int) -> bool:
        return (not self.disagreements and all(n == samples for n in self.search_trials.values())
                and all(n == samples for n in self.study_trials.values()) and self.robust_trials == samples
                and self.retrained_runs == 0
                and self.study_running == 0 and self.duplicated_rows == 0 and self.running_rows == 0
                and self.mixed_status_files == 0 and not self.changed_after_complete)


def sweep_file(out: Path, samples: int, datasets: tuple[str, ...] = DATASETS) -> dict:
    return {
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},  # as the quickstart: trials stop early
        "name": "chaos", "output": str(out / "out"),
        "datasets": [{"benchmark": d} for d in datasets],
        "trial": {"epochs": 2, "batch_size": 64, "scorers": ["msp", "energy"], "eval_batch_size": 1024},
        "space": {"alpha": {"low": 0.01, "high": 10.0, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}},
        "num_samples": samples,
        "objective": {"metric": "val/auroc", "scorer": "energy"},
        "resources": {"processes_per_trial": 1, "cpus_per_process": 1, "max_concurrent_trials": 2},
        "final": {"seeds": [0, 1]},
        "robust": {"num_samples": samples, "trial": {"alpha_scale": "relative"},
                   "space": {"alpha": {"low": 0.001, "high": 0.3, "log": True}, "p_inv": {"low": 0.05, "high": 0.5}}},
        "transfer": {"top_k": 1, "seeds": [0]},
    }


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the sweep's whole session: driver, Ray daemons, trial workers (by PID)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=30)
    proc.wait(timeout=30)


def _complete_files(results: Path) -> dict[str, str]:
    """Trial files whose every row has a terminal status: name → content hash."""
    out = {}
    for f in results.rglob("*.parquet") if results.exists() else []:
        with contextlib.suppress(Exception):  # a file being replaced at the kill is not complete
            if set(pd.read_parquet(f)["status"]) <= TERMINAL:
                out[str(f.relative_to(results))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _stage_ends(out: Path) -> int:
    path = out / "timeline.jsonl"
    return path.read_text().count('"event": "stage_end"') if path.exists() else 0


def _wait_to_kill(proc: subprocess.Popen, kind: str, rng: random.Random, max_wait_s: float, out: Path) -> float | None:
    """Wait for the kill's moment; the seconds since the run's start then, or None if the run ended first.
    An event that does not come within 2 × max-wait s is not waited for longer."""
    t0 = time.perf_counter()
    if kind == "time":
        try:
            proc.wait(timeout=rng.uniform(0.5, max_wait_s))
            return None
        except subprocess.TimeoutExpired:
            return time.perf_counter() - t0
    results = out / "results"
    seen, ends = set(_complete_files(results)), _stage_ends(out)
    while time.perf_counter() - t0 < 2 * max_wait_s:
        if proc.poll() is not None:
            return None
        if (kind == "trial-end" and set(_complete_files(results)) - seen) or (kind == "handover" and _stage_ends(out) > ends):
            break
        time.sleep(0.1)
    try:
        proc.wait(timeout=rng.uniform(0.0, 1.0))
        return None
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0


def run_chaos(work: Path, *, kills: int, seed: int, samples: int, max_wait_s: float,
              datasets: tuple[str, ...] = DATASETS) -> Audit:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "chaos.yaml"
    path.write_text(yaml.safe_dump(sweep_file(work, samples, datasets)))
    results = work / "out" / "results"
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)]
    rng.shuffle(kinds)
    moments, done_kinds, complete = [], [], {}
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i in range(kills + 1):
        cmd = [sys.executable, "-m", "ascood.cli.sweep", str(path), "--no-progress", *(["--resume"] if i else [])]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=env)
        if i == kills:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"the final resume failed:\n{err[-3000:]}")
            break
        moment = _wait_to_kill(proc, kinds[i], rng, max_wait_s, work / "out")
        if moment is None:  # the sweep ended before this kill; later kills hit a finished sweep
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError(f"attempt {i} failed:\n{proc.stderr.read()[-3000:]}")
            moment = float("nan")
        else:
            _kill_tree(proc)
        moments.append(round(moment, 1))
        done_kinds.append(kinds[i])
        for name, digest in _complete_files(results).items():
            complete.setdefault(name, digest)
    wall = time.perf_counter() - t0
    result = audit(work, results, samples, kills, moments, complete, wall, datasets)
    result.kill_kinds = done_kinds
    return result


def disagreements(results: Path, datasets: tuple[str, ...], studies: dict[str, list], robust: list) -> list[str]:
    """Every trial whose files and Optuna trial say different things about how it ended. A robust
    trial: COMPLETE when every dataset's file is completed; PRUNED or FAIL when the first file not
    completed says stopped-early or failed."""
    def status(path: Path) -> str | None:
        if not path.exists():
            return None
        s = set(pd.read_parquet(path)["status"])
        return next(iter(s)) if len(s) == 1 else f"mixed {sorted(s)}"

    out = []
    for d, trials in studies.items():
        for t in trials:
            st = status(results / safe_name(d) / f"search-{t.number:04d}.parquet")
            if STATE.get(st) != t.state.name:
                out.append(f"{d} search-{t.number:04d}: Parquet {st}, Optuna {t.state.name}")
    for t in robust:
        sts = [status(results / safe_name(d) / f"robust-{t.number:04d}.parquet") for d in datasets]
        first = next((st for st in sts if st != "completed"), "completed")
        if STATE.get(first) != t.state.name:
            out.append(f"robust-{t.number:04d}: Parquet {sts}, Optuna {t.state.name}")
    return out


def audit(work, results: Path, samples: int, kills: int, moments, complete: dict[str, str], wall: float,
          datasets: tuple[str, ...] = DATASETS) -> Audit:
    df = pd.read_parquet(results)
    files = sorted(results.rglob("*.parquet"))
    per_file = [set(pd.read_parquet(f)["status"]) for f in files]
    search = {d: len(list((results / safe_name(d)).glob("search-*.parquet"))) for d in datasets}
    storage = f"sqlite:///{work / 'out' / 'optuna.db'}"
    studies = {d: optuna.load_study(study_name=f"chaos-{d}", storage=storage).trials for d in datasets}
    robust = optuna.load_study(study_name="chaos-robust", storage=storage).trials
    done = df[df["reused_from"].isna() & (df["status"] == "completed")]
    trained = done.drop_duplicates(["benchmark", "stage", "trial_id", "run_id"])
    final_status = df.drop_duplicates(["benchmark", "stage", "run_id"])["status"].value_counts().to_dict()
    now = {str(f.relative_to(results)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    return Audit(
        kills=kills, kill_moments_s=moments, kill_kinds=[], wall_s=round(wall, 1), search_trials=search,
        study_trials={d: len(t) for d, t in studies.items()},
        study_running=sum(t.state == optuna.trial.TrialState.RUNNING for ts in [*studies.values(), robust] for t in ts),
        robust_trials=len(robust),
        retrained_runs=int(trained.duplicated(["benchmark", "run_id"]).sum()),
        statuses={k: int(v) for k, v in final_status.items()},
        duplicated_rows=int(df.duplicated(KEY).sum()), running_rows=int((df["status"] == "running").sum()),
        mixed_status_files=sum(len(s) != 1 for s in per_file), complete_files_at_kills=len(complete),
        changed_after_complete=sorted(n for n, d in complete.items() if now.get(n) != d),
        disagreements=disagreements(results, datasets, studies, robust),
    )


def table(rows: list[dict]) -> str:
    """One column per recorded run: its kills, its audit."""
    def kills(r: dict) -> str:
        return ", ".join(f"{k} {m}" for k, m in zip(r["kill_kinds"], r["kill_moments_s"], strict=True))

    lines = ["| | " + " | ".join(f"seed {r['seed']}" for r in rows) + " |", "|---|" + "---|" * len(rows)]
    cells = {
        "kills (kind, s after the run's start)": kills,
        "wall time, all runs": lambda r: f"{r['wall_s']:.0f} s",
        "search trials in Parquet / in Optuna, per dataset": lambda r: ", ".join(
            f"{d} {n} / {r['study_trials'][d]}" for d, n in r["search_trials"].items()),
        "robust trials in Optuna / left RUNNING": lambda r: f"{r['robust_trials']} / {r['study_running']}",
        "runs by final status": lambda r: ", ".join(f"{n} {s}" for s, n in sorted(r["statuses"].items())),
        "Parquet and Optuna disagree": lambda r: str(len(r["disagreements"])),
        "duplicated rows / `running` rows / mixed-status files": lambda r: (
            f"{r['duplicated_rows']} / {r['running_rows']} / {r['mixed_status_files']}"),
        "files complete at some kill / changed after": lambda r: (
            f"{r['complete_files_at_kills']} / {len(r['changed_after_complete'])}"),
        "runs trained twice": lambda r: str(r["retrained_runs"]),
        "audit": lambda r: "clean" if r["ok"] else "FAILED",
    }
    lines += [f"| {name} | " + " | ".join(cell(r) for r in rows) + " |" for name, cell in cells.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0], help="one case each")
    p.add_argument("--samples", type=int, default=10, help="search trials per dataset")
    p.add_argument("--max-wait", type=float, default=45.0, help="longest run before a kill (s)")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated benchmark names")
    p.add_argument("--output", type=Path, help="where each seed's sweep runs, in DIR/seed-N (default: --work)")
    p.add_argument("--record", type=Path, help="also append each audit to this JSON-lines file")
    rows.add_options(p, "chaos", "2 kills, seed 3, 3 trials per search, cmnist[classes=2] and mnist6",
                     table_file=True)
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.kills, args.seeds, args.samples, args.max_wait = 2, [3], 3, 40.0
        args.datasets = f"{rows.QUICK_BENCHMARK},mnist6"  # a parametrized name: its safe on-disk names resume too
    datasets = tuple(d.strip() for d in args.datasets.split(","))
    book = rows.Rows(args, key="seed", free=("seeds", "output", "record"))

    def one(seed: int) -> dict:
        work = (args.output or args.work) / f"seed-{seed}"
        shutil.rmtree(work, ignore_errors=True)  # what an interrupted attempt left: each case starts from nothing
        result = run_chaos(work, kills=args.kills, seed=seed, samples=args.samples, max_wait_s=args.max_wait,
                           datasets=datasets)
        return {"samples": args.samples, "ok": result.ok(args.samples), **asdict(result), "output": str(work)}

    for seed in book.missing(args.seeds):
        r = book.add(seed, one(seed))
        if args.record:
            rows.append(args.record, r)
        print(json.dumps(r, indent=2))
        print("nothing lost, nothing duplicated, nothing left running" if r["ok"] else "AUDIT FAILED", flush=True)
    mine = [r for seed in args.seeds for r in book.rows if r["seed"] == seed]
    print(table(mine))
    return 0 if all(r["ok"] for r in mine) else 1


if __name__ == "__main__":
    sys.exit(main())
