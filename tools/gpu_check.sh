#!/usr/bin/env bash
# The project's one GPU check: run it on a machine with a CUDA GPU as
#
#     tools/gpu_check.sh OUTDIR
#
# It finishes within 10 minutes on one H200 (budget below: BUDGET_S = 600 s, the time limits of
# every timed command plus their kill grace plus the script's own start-up; a Python must be
# ready: $GPU_CHECK_PYTHON or .venv; a `make setup` it has to run first is not counted) and
# prints one table (also OUTDIR/table.md), a row or more per step:
#   - meanpool_float32 / meanpool_bfloat16 (benchmarks.speed.pooling): meanpool with vit_h,
#     random weights at realistic load, fast vs reference (same partitions?)
#   - sweep (benchmarks.speed.sweep): fig3 transfer runs batched vs one at a time, 2 and 12 layers
#   - mask_step (benchmarks.speed.mask_step): discovery's mask step vs a plain step, 2 and 12 layers
#   - loader (benchmarks.speed.loader): images/s of Table 1's training transform on
#     ImageNet-sized JPEGs: PIL per core, DataLoader workers, nvJPEG decoding on the GPU
#   - vision_step (benchmarks.speed.vision_step): the vision training step of resnet18 and
#     vit_b_16 at the paper's batches (128, 512; ResNet also at the released code's 512), fp32
#     and bf16 autocast: images/s, and Table 1's projected wall time on 1 and 8 GPUs, each step
#     taking the longer of the model step and the loader's batch time (the loader step's rate)
#   - stacked_step (benchmarks.speed.stacked_step): Table 1's runs trained stacked
#     (--set stack=..., subind.stacked) vs one at a time, mini models, 3 and 8 runs at batch 64
#   - table1_tiny: `subind-bench run table1 --preset tiny --device cuda --set amp=bf16`, end to
#     end (synthetic world, pretraining, Linear FT, discovery, every strategy, evaluation)
#   - fig3_tiny: `subind-bench run fig3 --preset tiny --device cuda`, batched trainer
#     (--batch-runs 0; fig3 has no bf16 option)
# The two runs' results.jsonl are checked by the table for NaN and missing metrics.
# Every step has its own time limit, so a failing or hanging step costs at most its limit and
# shows as "failed: <reason>" in the table; each step's output (NAME.json, in the speed
# benchmarks' one JSON shape of benchmarks/speed/result.py, or the NAME/ folder), log and exit
# status stay in OUTDIR (a step's old output is removed before it runs). Add a step here, with
# its limit in LIMIT (keeping the sum within BUDGET_S; tests/tools/test_gpu_check.py checks it)
# and to tools/gpu_check_table.py (STEPS, and BENCHMARKS and PARSERS for a speed benchmark).
set -u -o pipefail

if [ $# -ne 1 ]; then
    echo "usage: tools/gpu_check.sh OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || { echo "error: cannot create $1" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Time limits (s) of every timed command. Worst case: sum(LIMIT) + KILL_AFTER_S per command +
# STARTUP_S = BUDGET_S (535 + 11 x 5 + 10 = 600 s = 10 minutes). No GPU timings had been
# measured when these were set: each is the step's estimated run time on an H200 with a margin
# (a model build, CUDA start-up and the timed work; the meanpool steps, the heaviest, time 3
# images each, not 4, to fit).
BUDGET_S=600
KILL_AFTER_S=5 # timeout's grace between TERM and KILL, per timed command
STARTUP_S=10   # bash, mkdir, removing old outputs: everything outside the timed commands
declare -A LIMIT=(
    [env]=30
    [meanpool_float32]=90
    [meanpool_bfloat16]=85
    [sweep]=70
    [mask_step]=35
    [loader]=25
    [vision_step]=85
    [stacked_step]=20
    [table1_tiny]=55
    [fig3_tiny]=30
    [table]=10
)

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

START=$(date +%s) # the budget starts once a Python is ready

# Environment: torch / CUDA versions and the GPU, printed and kept for the table.
timeout --kill-after="$KILL_AFTER_S" "${LIMIT[env]}" "$PY" - "$OUT/env.json" <<'EOF'
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

# step NAME COMMAND...: run with the time limit LIMIT[NAME], after removing NAME's old output
# (NAME.json, NAME/), so a failed step never shows an earlier run's results; log, exit status
# and output in OUT.
step() {
    local name=$1
    shift
    local limit=${LIMIT[$name]:?no time limit for step $name in LIMIT}
    local t0
    t0=$(date +%s)
    rm -rf "${OUT:?}/$name.json" "${OUT:?}/$name"
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after="$KILL_AFTER_S" "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$rc" >"$OUT/$name.rc"
    echo "   exit $rc after $(($(date +%s) - t0))s; log: $OUT/$name.log"
}

for dtype in float32 bfloat16; do
    step "meanpool_$dtype" "$PY" -m benchmarks.speed.pooling --device cuda --model-type vit_h \
        --random-weights --load realistic --dtype "$dtype" --n-images 3 --warmup 1 \
        --json "$OUT/meanpool_$dtype.json"
done
step sweep "$PY" -m benchmarks.speed.sweep --device cuda --layers 2,12 --json "$OUT/sweep.json"
step mask_step "$PY" -m benchmarks.speed.mask_step --device cuda --layers 2,12 \
    --json "$OUT/mask_step.json"
step loader "$PY" -m benchmarks.speed.loader --device cuda --images 128 --passes 2 \
    --workers 4,16 --json "$OUT/loader.json"
step vision_step "$PY" -m benchmarks.speed.vision_step --device cuda --archs resnet18,vit_b_16 \
    --dtypes fp32,bf16 --preset paper --project --project-set batch_size_resnet=512 \
    --loader-json "$OUT/loader.json" \
    --steps 10 --warmup 3 --json "$OUT/vision_step.json"
step stacked_step "$PY" -m benchmarks.speed.stacked_step --device cuda \
    --archs resnet18-mini,vit_b_16-mini --runs 3,8 --batch 64 --steps 10 --warmup 3 \
    --json "$OUT/stacked_step.json"
step table1_tiny "$PY" -m benchmarks.cli run table1 --preset tiny --device cuda --set amp=bf16 \
    --out "$OUT/table1_tiny" --no-progress
step fig3_tiny "$PY" -m benchmarks.cli run fig3 --preset tiny --device cuda --batch-runs 0 \
    --out "$OUT/fig3_tiny" --no-progress

echo "== total $(($(date +%s) - START))s (budget ${BUDGET_S}s: the limits, ${KILL_AFTER_S}s grace each, ${STARTUP_S}s start-up)"
timeout --kill-after="$KILL_AFTER_S" "${LIMIT[table]}" "$PY" tools/gpu_check_table.py "$OUT"
