#!/usr/bin/env bash
# A paper-preset slice of Figure 3 for one GPU: 2 and 12 layers, all 17 sizes, all conditions
# (the five of Figure 3, the released code's inverted control and unmasked-only), both unmasked
# modes, one seed. Usage: tools/fig3_paper_slice.sh [OUT] [extra subind-bench options]
set -euo pipefail
out=${1:-runs/fig3-paper-slice}
shift || true
exec subind-bench run fig3 --preset paper --layers 2,12 --seeds 0 \
  --conditions subtask-induction,scratch,full-transfer,random-subnetwork,complement-subnetwork,random-subnetwork-inverted,unmasked-only \
  --out "$out" "$@"
