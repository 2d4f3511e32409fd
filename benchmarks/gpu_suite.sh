#!/usr/bin/env bash
# Every pending GPU measurement of mibench in one command, <= 9 minutes on one H100/H200:
#
#   1. training throughput, ours vs the reference's shape, fp32 and bf16, batch 256, MIST's n/d laws,
#      plus batched and single-dataset inference       -> train_throughput-gpu.{md,parquet}
#   2. the torch KSG at n = 20k and 100k, 25x25         -> ksg_gpu.{md,parquet}
#   3. neural estimators: stacked cells/s vs a plain per-cell PyTorch loop -> neural_speed_gpu.{md,parquet}
#   4. a 5-minute paper-preset training run evaluated on the paper's test splits
#                                                       -> mist_accuracy-paper5min-gpu.{md,parquet}
#
# Each step runs under its own time limit (80 + 45 + 55 + 350 = 530 s), so one hung step cannot eat the
# others' time; a failed step is reported at the end and makes the exit code 1. Results and the log
# (gpu_suite.log, with the machine) go to --out (default benchmarks/results).
#
#   bash benchmarks/gpu_suite.sh                      # on the GPU machine, from the repository root
#   bash benchmarks/gpu_suite.sh --smoke --out /tmp/s # the same code paths on the CPU in seconds (tested)
set -uo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
SMOKE=0
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PYTHON:-python}"
OUT="${OUT:-$REPO/benchmarks/results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_suite.log"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [[ $SMOKE -eq 1 ]]; then
  DEVICE=cpu
  WORK="$OUT/paper_quick"
else
  DEVICE=cuda
  WORK="$REPO/results/paper_quick"
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_suite.sh: torch sees no CUDA device; run on the GPU machine (or --smoke for the CPU code paths)" >&2
    exit 3
  fi
fi

START=$SECONDS
FAILED=()
{
  echo "# gpu_suite.sh $(date -u '+%Y-%m-%d %H:%M UTC') (smoke: $SMOKE)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$PY" - <<'EOF'
import os, platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"machine: GPU {gpu}; {os.cpu_count()} CPUs; torch {torch.__version__}; python {platform.python_version()}")
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} 2>&1 | tee "$LOG"

# step NAME LIMIT_SECONDS COMMAND...: run under a time limit, log, remember failures
step() {
  local name="$1" limit="$2"
  shift 2
  echo "== [$((SECONDS - START)) s] $name (limit ${limit} s): $*" | tee -a "$LOG"
  timeout --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  [[ $rc -eq 0 ]] || FAILED+=("$name (exit $rc$([[ $rc -eq 124 ]] && echo ': time limit'))")
  echo "== [$((SECONDS - START)) s] $name: exit $rc" | tee -a "$LOG"
}

if [[ $SMOKE -eq 1 ]]; then
  step throughput 120 "$PY" benchmarks/train_throughput.py --smoke --preset tiny --device cpu --precisions fp32,bf16 \
    --no-mine --tag smoke --out "$OUT"
  step ksg 60 "$PY" benchmarks/ksg_gpu.py --smoke --out "$OUT"
  step neural 120 "$PY" benchmarks/neural_speed.py --device cpu --threads 1 --cells 3 --cell-steps 4 \
    --batches 32 --dims 2 --step-budget 0.05 --estimate-steps 4 --n 200 --out "$OUT"
  step paper 240 "$PY" benchmarks/paper_quick.py --smoke --work "$WORK" --out "$OUT"
else
  step throughput 80 "$PY" benchmarks/train_throughput.py --device cuda --precisions fp32,bf16 --no-mine \
    --steps 15 --warmup 3 --infer-count 2048 --tag gpu --out "$OUT"
  step ksg 45 "$PY" benchmarks/ksg_gpu.py --device cuda --out "$OUT"
  step neural 55 "$PY" benchmarks/neural_speed.py --device cuda --cells 64 --batches 256 --dims 5 \
    --step-budget 1 --estimate-steps 200 --out "$OUT"
  step paper 350 "$PY" benchmarks/paper_quick.py --minutes 5 --jobs 16 --work "$WORK" --out "$OUT"
fi

echo "== total $((SECONDS - START)) s" | tee -a "$LOG"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf 'FAILED: %s\n' "${FAILED[@]}" | tee -a "$LOG"
  exit 1
fi
echo "all steps passed; results in $OUT" | tee -a "$LOG"
