"""Engine overhead of a sweep, and where it goes.

    python benchmarks/sweep_overhead.py [sweeps/quickstart.yaml] [--samples-scale 2] [--datasets 2]
        [--samples N] [--no-stages] [--output DIR] [--label TEXT] [--work DIR] [--resume] [--table] [--quick]

Runs the sweep into a fresh output directory (a subprocess, as a user runs it), then reads every
trained trial's `wall_time_s` (training plus evaluation) from the Parquet results and the driver's
`OUT/timeline.jsonl`. The ideal wall time is the trials' train+eval time over the concurrency;
the rest is overhead, broken down into (each in wall-clock seconds, slot time ÷ concurrency):

- start-up: interpreter and imports, the data check, Ray's start, until the first stage starts;
- actor start: from Tune starting a trial to the trainable being entered (process, imports);
- set-up inside trials: entered until training starts (data, model, trackers);
- other inside trials: reporting, checkpoint commits, teardown, a joint trial's later set-ups;
- scheduling gaps: slots idle while some running stage still had trials to start;
- stage ends: slots idle while every running stage had started all its trials (stragglers);
- shut-down: after the last stage, until the process exits.

`--samples-scale K` multiplies every `num_samples` (the search and robust stages), `--samples N`
sets them, `--datasets N` keeps the first N datasets, `--no-stages` runs the search stage only.
Each sweep so shaped is a case (its label), one row in `DIR/rows.jsonl` (benchmarks/rows.py):
`--resume` with another shape measures it beside the rows there; `--table` prints them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import rows
import yaml

LATER_STAGES = ("robust", "transfer", "baselines", "outliers")


def shaped(spec: dict, args: argparse.Namespace) -> dict:
    spec = json.loads(json.dumps(spec))
    if args.datasets:
        spec["datasets"] = spec["datasets"][: args.datasets]
    if args.no_stages:
        for key in LATER_STAGES:
            spec.pop(key, None)
        spec["final"] = None
    for holder in [spec, spec.get("robust") or {}]:
        if "num_samples" in holder:
            holder["num_samples"] = args.samples or int(round(holder["num_samples"] * args.samples_scale))
    return spec


def timeline(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines() if line.strip()]


ENDS = ("trial_completed", "trial_stopped", "trial_failed")


def trial_spans(events: list[dict]) -> list[dict]:
    """Per trial: its stage, when it took a slot (its process started, for the first trial of a
    fresh process; else when it was entered), entered, training start, end."""
    trials: dict[str, dict] = {}
    for e in events:
        if "trial" not in e:
            continue
        t = trials.setdefault(e["trial"], {"stage": e["stage"]})
        if e["event"] == "trial_start":
            t.setdefault("start", e["t"])
        elif e["event"] == "trial_result" and "first" not in t and "t_entered" in e:
            t.update(first=e["t"], entered=e["t_entered"], train=e["t"] - e.get("wall_time_s", 0.0),
                     process=(e["pid"], e["t_process"]), t_process=e["t_process"])
        elif e["event"] in ENDS:
            t["end"] = e["t"]
    spans = [t for t in trials.values() if "end" in t and ("start" in t or "entered" in t)]
    seen = set()
    for t in sorted(spans, key=lambda t: t.get("entered", t.get("start"))):
        fresh = "process" in t and t["process"] not in seen
        if "process" in t:
            seen.add(t["process"])
        t["actor"] = t["entered"] - t["t_process"] if fresh else 0.0
        t["slot"] = t["t_process"] if fresh else t.get("entered", t.get("start"))
        t["setup"] = max(0.0, t["train"] - t["entered"]) if "entered" in t else 0.0
    return spans


def idle_split(events: list[dict], spans: list[dict], conc: int, t0: float, t1: float) -> tuple[float, float]:
    """Idle slot-seconds between t0 and t1: (while some running stage had trials left to start,
    while none had)."""
    marks = [(e["t"], 0, e["event"], e) for e in events if e["event"] in ("stage_start", "stage_end")]
    marks += [(t["slot"], 1, "take", t) for t in spans] + [(t["end"], 2, "free", t) for t in spans]
    marks.sort(key=lambda m: (m[0], m[1]))
    planned, started, running = {}, {}, 0
    gaps = ends = 0.0
    last = t0
    for when, _, kind, item in marks:
        now = min(max(when, t0), t1)
        idle = max(0, conc - running) * max(0.0, now - last)
        left = any(started.get(s, 0) < n for s, n in planned.items())
        if left:
            gaps += idle
        else:
            ends += idle
        last = max(last, now)
        if kind == "stage_start":
            planned[item["stage"]], started[item["stage"]] = item.get("trials", 0), 0
        elif kind == "stage_end":
            planned.pop(item["stage"], None)
        elif kind == "take":
            running += 1
            started[item["stage"]] = started.get(item["stage"], 0) + 1
        else:
            running -= 1
    return gaps, ends


def breakdown(out: Path, conc: int, launched: float, exited: float, busy: float) -> dict:
    events = timeline(out)
    start = next(e for e in events if e["event"] == "sweep_start")
    first_stage = min(e["t"] for e in events if e["event"] == "stage_start")
    stages_end = next(e["t"] for e in events if e["event"] == "stages_end")
    spans = trial_spans(events)
    actor = sum(t["actor"] for t in spans)
    setup = sum(t["setup"] for t in spans)
    span = sum(t["end"] - t["slot"] for t in spans)
    gaps, ends = idle_split(events, spans, conc, first_stage, stages_end)
    return {
        "start-up: imports": start["t_start"] - launched,
        "start-up: data check": start["t_checked"] - start["t_start"],
        "start-up: Ray start": start["t_ray"] - start["t_checked"],
        "start-up: until the first stage": first_stage - start["t_ray"],
        "actor start (process, imports)": actor / conc,
        "set-up inside trials (data, model, trackers)": setup / conc,
        "other inside trials (reports, teardown)": (span - busy - actor - setup) / conc,
        "scheduling gaps": gaps / conc,
        "stage ends": ends / conc,
        "shut-down": exited - stages_end,
    }


@dataclass
class Measured:
    label: str
    trials: int
    trained: int
    wall: float
    busy: float  # the trained runs' train+eval seconds
    conc: int
    parts: dict

    @property
    def overhead(self) -> float:
        return self.wall - self.busy / self.conc

    @property
    def share(self) -> float:
        return self.overhead / self.wall


def measure(spec: dict, out: Path, label: str = "") -> Measured:
    """Run `spec` (a sweep file's mapping) into the fresh directory `out` as a user would, and
    measure it."""
    spec = {**spec, "output": str(out)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = out.parent / "sweep.yaml"
    tmp_file.write_text(yaml.safe_dump(spec))
    launched = time.time()
    proc = subprocess.run([sys.executable, "-m", "ascood.cli.sweep", str(tmp_file), "--fresh", "--no-progress"],
                          capture_output=True, text=True)
    exited = time.time()
    if proc.returncode != 0:
        sys.exit(f"sweep failed:\n{proc.stderr[-3000:]}")
    import pandas as pd

    df = pd.read_parquet(out / "results")
    trained = df[df["reused_from"].isna()]  # a reused run was trained (and counted) once, by its original trial
    per_run = trained.groupby(["stage", "benchmark", "trial_id"])["wall_time_s"].max()
    busy = float(per_run.sum())
    conc = spec.get("resources", {}).get("max_concurrent_trials", 2)
    label = label or f"{spec['name']}, {len(spec['datasets'])} datasets, num_samples {spec.get('num_samples')}"
    return Measured(label, df.groupby(["stage", "trial_id"]).ngroups, len(per_run), exited - launched, busy, conc,
                    breakdown(out, conc, launched, exited, busy))


def label_of(spec: dict, args: argparse.Namespace) -> str:
    return args.label or (f"{spec['name']}, {len(spec['datasets'])} datasets, num_samples {spec.get('num_samples')}"
                          + (", search only" if args.no_stages else ""))


def values(m: Measured) -> dict:
    """A measured sweep as a row's values."""
    return {**asdict(m), "overhead": round(m.overhead, 3), "share": round(m.share, 5)}


def measured(row: dict) -> Measured:
    return Measured(**{k: row[k] for k in ("label", "trials", "trained", "wall", "busy", "conc", "parts")})


def table(rows_: list[dict]) -> str:
    ms = [(measured(r), r.get("quick")) for r in rows_]
    text = [rows.markdown(["sweep", "trials", "wall", "trials' train+eval", "÷ concurrency", "overhead", "share"],
                          [(m.label + (" (quick)" if q else ""), m.trials, f"{m.wall:.0f} s", f"{m.busy:.0f} s",
                            f"{m.busy / m.conc:.0f} s", f"{m.overhead:.0f} s", f"**{100 * m.share:.1f}%**") for m, q in ms],
                          "lrrrrrr")]
    for m, _ in ms:
        lines = [(name, f"{sec:.1f}", f"{100 * sec / m.wall:.1f}%") for name, sec in m.parts.items()]
        lines.append((f"(sum; the overhead above is {m.overhead:.1f})", f"{sum(m.parts.values()):.1f}",
                      f"{100 * sum(m.parts.values()) / m.wall:.1f}%"))
        text += ["", f"where the overhead of {m.label} goes:", "",
                 rows.markdown(["where the overhead goes", "seconds", "share of wall"], lines, "lrr")]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, nargs="?", default=rows.REPO / "sweeps" / "quickstart.yaml")
    p.add_argument("--samples-scale", type=float, default=1.0)
    p.add_argument("--samples", type=int)
    p.add_argument("--datasets", type=int)
    p.add_argument("--no-stages", action="store_true")
    p.add_argument("--output", type=Path, help="output directory (default: under --work, one per case)")
    p.add_argument("--label", default="")
    rows.add_options(p, "sweep-overhead", f"the search stage alone, 2 trials of 1 epoch on {rows.QUICK_BENCHMARK}")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    spec = yaml.safe_load(args.sweep.read_text())
    if args.quick:
        spec = rows.quick_sweep(spec)
        args.samples, args.no_stages, args.datasets = 2, True, None
    spec = shaped(spec, args)
    book = rows.Rows(args, free=("sweep", "samples_scale", "samples", "datasets", "no_stages", "output", "label"))
    label = label_of(spec, args)
    out = args.output or args.work / re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-") / "out"
    book.measure([(label, lambda: values(measure(spec, out, label)))],
                 say=lambda r: f"sweep {r['label']}: {r['trials']} trials ({r['trained']} trained runs), "
                               f"concurrency {r['conc']}, wall {r['wall']:.0f} s")
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
