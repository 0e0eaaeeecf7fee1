#!/usr/bin/env bash
# GPU smoke test: what only a GPU shows, in a few minutes, one line per check, non-zero exit on any failure.
#
#   benchmarks/gpu_smoke.sh [--cpu | --quick] [--work DIR] [--resume] [--table]
#
# On a GPU machine (about 5 minutes on one GPU): the step benchmark (CE vs ASCOOD, fp32 and bf16),
# `ascood-train --mixed-precision bf16` on an embedded benchmark, `ascood-eval` with every scorer,
# training's evaluation equal to `ascood-eval`'s for ODIN, i-ODIN, energy and SCALE, a 4-trial sweep
# with `gpus_per_process: 0.5`, a 2-process DDP (NCCL) run when two GPUs are visible, and GPU-vs-CPU
# score parity for ODIN, i-ODIN and SCALE on the same checkpoint.
# `--cpu`: the same checks on the CPU with every GPU hidden and the smallest sizes (what CI runs);
# the GPU-only checks (DDP over two GPUs, GPU-vs-CPU parity) are reported as SKIP.
# `--quick`: the same as `--cpu` (its sizes are the smallest).
# `--work DIR` (or `--keep DIR`): keep every log and output there (the step tables are in
# DIR/step-*.log), and one JSON line per check in DIR/rows.jsonl (name, result, seconds, detail,
# where and when: benchmarks/rows.py), started anew unless `--resume`: then the checks recorded
# there as PASS or SKIP in this mode are not run again (the other rows are dropped: those checks
# run again). `--table`: print the table of those rows.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--cpu | --quick] [--work DIR] [--resume] [--table]" >&2; exit 2; }
MODE=gpu WORK="" RESUME=0 TABLE=0
while (($#)); do
  case "$1" in
    --cpu | --quick) MODE=cpu ;;
    --work | --keep) (($# >= 2)) || usage; WORK="$2"; shift ;;
    --resume) RESUME=1 ;;
    --table) TABLE=1 ;;
    *) usage ;;
  esac
  shift
done
PY=${PYTHON:-.venv/bin/python}
ROWS_PY=benchmarks/rows.py
if ((TABLE)); then
  [[ -n "$WORK" ]] || usage
  exec "$PY" "$ROWS_PY" table "$WORK/rows.jsonl" name result seconds detail
fi
if [[ -n "$WORK" ]]; then mkdir -p "$WORK"; else WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi
ROWS="$WORK/rows.jsonl"
if ((RESUME)); then
  DONE=$("$PY" "$ROWS_PY" keep "$ROWS" name result=PASS,SKIP mode="$MODE")  # a failed check runs again
else
  rm -f "$ROWS"
  DONE=""
fi

if [[ $MODE == cpu ]]; then
  export CUDA_VISIBLE_DEVICES=""
  BENCH="cmnist[classes=2]" EPOCHS=1 BACKBONE=small_cnn BATCH=16 STEPS=2 GPUS=0 SEARCH=--no-search
else
  BENCH="mnist10" EPOCHS=2 BACKBONE=resnet18_32x32 BATCH=128 STEPS=20 GPUS=0.5 SEARCH=""
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SETTINGS="{\"mode\": \"$MODE\", \"bench\": \"$BENCH\", \"epochs\": $EPOCHS, \"backbone\": \"$BACKBONE\", \"batch\": $BATCH, \"steps\": $STEPS, \"gpus\": $GPUS}"
QUICK=$([[ $MODE == cpu ]] && echo true || echo false)

kept() { grep -qxF -- "$1" <<<"$DONE"; }
record() {  # record NAME RESULT SECONDS DETAIL: one row, as soon as the check has ended
  "$PY" "$ROWS_PY" add "$ROWS" name="$1" result="$2" seconds:="$3" detail="$4" mode="$MODE" quick:="$QUICK" \
    settings:="$SETTINGS"
}
failures=0
check() {  # check NAME COMMAND…: PASS/FAIL with the seconds it took; the log is WORK/NAME.log
  local name=$1 t0=$EPOCHREALTIME seconds detail
  shift
  if kept "$name"; then echo "kept $name: recorded as passed or skipped before (--resume)"; return; fi
  if "$@" >"$WORK/$name.log" 2>&1; then
    seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    detail=$(grep -v '^[[:space:]]*$' "$WORK/$name.log" | tail -n 1)
    echo "PASS $name (${seconds%.*}s)"
    record "$name" PASS "$seconds" "$detail"
  else
    seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    detail=$(tail -n 1 "$WORK/$name.log")
    echo "FAIL $name (${seconds%.*}s): $detail"
    record "$name" FAIL "$seconds" "$detail"
    failures=$((failures + 1))
  fi
}
skip() {
  if kept "$1"; then echo "kept $1: recorded as skipped before (--resume)"; return; fi
  echo "SKIP $1: $2"
  record "$1" SKIP 0 "$2"
}

device() {
  "$PY" - "$MODE" <<'EOF'
import sys, torch
gpu = torch.cuda.is_available()
print(torch.cuda.get_device_name() if gpu else "cpu", "bf16" if gpu and torch.cuda.is_bf16_supported() else "")
sys.exit(0 if gpu == (sys.argv[1] == "gpu") else 1)
EOF
}

train() {
  "$PY" -m ascood.cli.train --benchmark "$BENCH" --epochs "$EPOCHS" --backbone small_cnn --mixed-precision bf16 \
    --scorers msp,energy,odin,iodin,scale --out "$WORK/run" --no-progress
}

evaluate_all() {
  "$PY" -m ascood.cli.eval "$WORK/run" --scorers all $SEARCH --out "$WORK/eval-all.parquet" &&
    "$PY" - "$WORK/eval-all.parquet" <<'EOF'
import sys, pandas as pd
from ascood.scorers import SCORERS
df = pd.read_parquet(sys.argv[1])
bad = df[df["auroc"].isna()]
assert set(df["scorer"]) == set(SCORERS), sorted(set(SCORERS) - set(df["scorer"]))
assert bad.empty, bad[["scorer", "ood_set", "status_reason"]].drop_duplicates("scorer").to_string()
EOF
}

agree() {  # training's own evaluation (bf16 run) against ascood-eval of the same checkpoint (unsearched)
  if [[ -n $SEARCH ]]; then
    cp "$WORK/eval-all.parquet" "$WORK/eval-here.parquet"  # --cpu: eval-all ran without search already
  else
    "$PY" -m ascood.cli.eval "$WORK/run" --scorers odin,iodin,energy,scale --no-search --no-cache \
      --out "$WORK/eval-here.parquet" || return 1
  fi
  "$PY" - "$WORK/run/results.parquet" "$WORK/eval-here.parquet" <<'EOF'
import sys, pandas as pd
key = ["split", "ood_set", "scorer"]
train = pd.read_parquet(sys.argv[1])
train = train[(train["epoch"] == train["epoch"].max()) & train["scorer"].isin(["odin", "iodin", "energy", "scale"])]
train = train.set_index(key).sort_index()
ev = pd.read_parquet(sys.argv[2]).set_index(key).sort_index().loc[train.index]
diff = (train["auroc"] - ev["auroc"]).abs()
print(f"max |training − ascood-eval| AUROC: {diff.max():.6f} points")
assert (diff == 0).all(), diff[diff > 0].to_string()
EOF
}

sweep() {
  cat >"$WORK/sweep.yaml" <<EOF
name: smoke
output: $WORK/sweep
datasets: [{benchmark: "$BENCH"}]
trial: {epochs: 1, batch_size: 64, scorers: [msp, energy], mixed_precision: bf16}
space: {alpha: {low: 0.01, high: 10.0, log: true}, p_inv: {low: 0.05, high: 0.5}}
num_samples: 4
objective: {metric: val/auroc, scorer: energy}
resources: {processes_per_trial: 1, cpus_per_process: 1, gpus_per_process: $GPUS, max_concurrent_trials: 2}
final: {seeds: [0]}
EOF
  "$PY" -m ascood.cli.sweep "$WORK/sweep.yaml" --no-progress &&
    "$PY" - "$WORK/sweep" <<'EOF'
import sys, pandas as pd
df = pd.read_parquet(f"{sys.argv[1]}/results")
search = df[df["stage"] == "search"]
assert search["trial_id"].nunique() == 4, search["trial_id"].nunique()
assert (df["status"] == "completed").all(), df.loc[df["status"] != "completed", "status_reason"].unique()
EOF
}

ddp() {
  "$PY" -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29511 \
    tests/ddp_worker.py "$WORK/ddp" eval "$BENCH" &&
    "$PY" - "$WORK/ddp" <<'EOF'
import json, sys, torch
out = sys.argv[1]
infos = [json.load(open(f"{out}/rank{r}.json")) for r in (0, 1)]
assert all(i["status"] == "completed" and i["num_processes"] == 2 for i in infos), infos
w0, w1 = (torch.load(f"{out}/rank{r}.pt", weights_only=True) for r in (0, 1))
assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks diverged"
EOF
}

parity() {  # the same checkpoint scored on the GPU (agree's output) and on the CPU
  CUDA_VISIBLE_DEVICES="" "$PY" -m ascood.cli.eval "$WORK/run" --scorers odin,iodin,scale --no-search --no-cache \
    --out "$WORK/eval-cpu.parquet" &&
    "$PY" - "$WORK/eval-here.parquet" "$WORK/eval-cpu.parquet" <<'EOF'
import sys, pandas as pd
key = ["split", "ood_set", "scorer"]
gpu, cpu = (pd.read_parquet(p).set_index(key).sort_index() for p in sys.argv[1:])
diff = (gpu.loc[cpu.index, "auroc"] - cpu["auroc"]).abs()
print(diff.groupby(level="scorer").max().to_string())
assert diff.max() <= 0.5, f"GPU and CPU AUROC differ by {diff.max():.3f} points"
EOF
}

step() {  # step NAME PRECISION
  "$PY" benchmarks/step_cost.py --backbone "$BACKBONE" --batch-size "$BATCH" --steps "$STEPS" --warmup 1 \
    --mixed-precision "$2" --work "$WORK/$1"
}

echo "# gpu_smoke ($MODE mode), $(date -u +%FT%TZ), work dir $WORK"
check device device
check step-fp32 step step-fp32 no
check step-bf16 step step-bf16 bf16
check train-bf16 train
check eval-all-scorers evaluate_all
check train-eval-agree agree
check sweep-4-trials sweep
n_gpus=0
if ! kept ddp-2-gpus; then n_gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0); fi
if [[ $MODE == gpu && $n_gpus -ge 2 ]]; then check ddp-2-gpus ddp; else skip ddp-2-gpus "$n_gpus GPU(s) visible"; fi
if [[ $MODE == gpu ]]; then check gpu-cpu-parity parity; else skip gpu-cpu-parity "no GPU in --cpu mode"; fi
if [[ $MODE == gpu ]]; then grep -h "^|" "$WORK"/step-*.log; fi
"$PY" "$ROWS_PY" table "$ROWS" name result seconds detail
echo "# $failures failed"
exit $((failures > 0))
