#!/usr/bin/env bash
# The project's one GPU check: run it on a machine with a CUDA GPU as
#
#     tools/gpu_check.sh OUTDIR
#
# It finishes within 8 minutes on one H100 and prints one table (also OUTDIR/table.md):
#   - benchmarks.speed.pooling: meanpool with vit_h, random weights at realistic load, fast vs
#     reference (same partitions?), fp32 and bf16
#   - benchmarks.speed.sweep: fig3 transfer runs batched vs one at a time, 2 and 12 layers
#   - benchmarks.speed.mask_step: discovery's mask step vs a plain step, 2 and 12 layers
# Every step has its own time limit, so a failing or hanging step costs at most its limit and
# shows as "failed: <reason>" in the table; each step's JSON, log and exit status stay in
# OUTDIR. Add a step here (and to tools/gpu_check_table.py) when a benchmark is added.
set -u -o pipefail

if [ $# -ne 1 ]; then
    echo "usage: tools/gpu_check.sh OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || { echo "error: cannot create $1" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

# Python: $GPU_CHECK_PYTHON, else the project's .venv, else `make setup` (needs the package
# index), else python3 as it is.
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
elif timeout 300 make setup >"$OUT/setup.log" 2>&1; then
    PY=.venv/bin/python
else
    PY=python3
    echo "warning: no .venv and \`make setup\` failed (see $OUT/setup.log); using $(command -v python3)" >&2
fi

# Environment: torch / CUDA versions and the GPU, printed and kept for the table.
timeout 120 "$PY" - "$OUT/env.json" <<'EOF'
import json, subprocess, sys
import torch
env = {
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cuda_available": torch.cuda.is_available(),
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "python": sys.version.split()[0],
}
try:
    env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                       text=True).stdout.strip() or None
except OSError:
    env["git_commit"] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(f"torch {env['torch']}, CUDA {env['cuda']}, GPU: {env['gpu']}, python {env['python']}")
if not env["cuda_available"]:
    print("warning: torch sees no CUDA device; the steps below will fail", file=sys.stderr)
EOF

# step NAME LIMIT_S COMMAND...: run with its own time limit; log, exit status and JSON in OUT.
step() {
    local name=$1 limit=$2
    shift 2
    local t0
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$rc" >"$OUT/$name.rc"
    echo "   exit $rc after $(($(date +%s) - t0))s; log: $OUT/$name.log"
}

# Limits sum to 450 s (+ start-up) so that the whole check stays within 8 minutes.
for dtype in float32 bfloat16; do
    step "meanpool_$dtype" 140 "$PY" -m benchmarks.speed.pooling --device cuda --model-type vit_h \
        --random-weights --load realistic --dtype "$dtype" --n-images 4 --warmup 1 \
        --json "$OUT/meanpool_$dtype.json"
done
step sweep 120 "$PY" -m benchmarks.speed.sweep --device cuda --layers 2,12 --json "$OUT/sweep.json"
step mask_step 50 "$PY" -m benchmarks.speed.mask_step --device cuda --layers 2,12 \
    --json "$OUT/mask_step.json"

echo "== total $(($(date +%s) - START))s"
"$PY" tools/gpu_check_table.py "$OUT"
