#!/usr/bin/env bash
# The runs that show a refactor changed no number: fig3's tiny preset (batched, one at a time,
# two worker processes), fig8's tiny preset, and table1's mini preset at a small size, run from
# the checkout ROOT into OUT. Run it for the commit before and the commit after (same CPU), then
#
#     tools/behaviour_runs.sh OLD_CHECKOUT runs/before && tools/behaviour_runs.sh . runs/after
#     for d in runs/before/*/; do python tools/same_results.py "$d" runs/after/$(basename "$d"); done
#
# PYTHON: the interpreter with the project's dependencies (default: this checkout's .venv).
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: tools/behaviour_runs.sh ROOT OUT" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
ROOT=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT  # the checkout's own packages, whatever is installed
bench() { "$PY" -c "from benchmarks.cli import main; main()" "$@"; }
t0=$(date +%s)
bench run fig3 --preset tiny --out "$OUT/fig3-tiny" --no-progress
bench run fig3 --preset tiny --batch-runs 1 --out "$OUT/fig3-tiny-single" --no-progress
bench run fig3 --preset tiny --workers 2 --out "$OUT/fig3-tiny-workers" --no-progress
bench run fig8 --preset tiny --out "$OUT/fig8-tiny" --no-progress
# TABLE1_SET: the --set options that make table1's mini preset small, in the field names of the
# checkouts compared. Checkouts up to 4e7e798 name them differently: TABLE1_SET="pretrain_epochs=1
# linear_steps=20 discovery_epochs=3 steps=20 eval_every=10 seeds=0 require_subnetwork_gain=false"
TABLE1_SET=${TABLE1_SET:-"pretrain_epochs=1 adapt_epochs=1 discovery_epochs_resnet=3 \
discovery_epochs_vit=3 steps=20 steps_vit=20 eval_every=10 seeds=0 require_subnetwork_gain=false"}
sets=()
for kv in $TABLE1_SET; do sets+=(--set "$kv"); done
bench run table1 --preset mini --out "$OUT/table1-mini-small" --no-progress "${sets[@]}"
echo "behaviour runs: $(($(date +%s) - t0)) s in $OUT"
