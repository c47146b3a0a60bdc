#!/usr/bin/env bash
# O-LoRA λ1 sweep at SEFE's rank (docs/METHODS.md, "O-LoRA's λ1"): the first CoIN tasks once per λ1, then one
# `sefe report` with the runs side by side (final accuracy, forgetting, the olora_orth curve in train_log.jsonl).
# Default λ1s: 0 (plain LoRA), the rank-scaled default 0.05 x (16/r)^2 = 7.8e-4 at r 128 and x4 / ÷4 around it,
# MCITlib's LLaVA port 0.05 (set at rank 16) and the O-LoRA T5 scripts' 0.5 (rank 8 on q/v).
#   scripts/olora_lambda_sweep.sh [CONFIG]        (CONFIG: configs/coin-llava7b.yaml)
#   TASKS=ScienceQA,TextVQA LAMS="7.8e-4 3.1e-3" OUT=runs/sweep scripts/olora_lambda_sweep.sh
#   LAUNCH="accelerate launch --config_file configs/accelerate/zero2.yaml -m" scripts/olora_lambda_sweep.sh
#   EXTRA="--max-steps 50" scripts/olora_lambda_sweep.sh   (more `sefe train` arguments for every run)
# A killed sweep resumes: rerun the same command (finished runs are skipped stage by stage).
set -euo pipefail
CONFIG=${1:-configs/coin-llava7b.yaml}
TASKS=${TASKS:-ScienceQA,TextVQA,ImageNet}
LAMS=${LAMS:-"0 1.95e-4 7.8e-4 3.1e-3 0.05 0.5"}
OUT=${OUT:-runs/olora-lam-sweep}
LAUNCH=${LAUNCH:-python -m}
read -r -a extra <<< "${EXTRA:-}"
runs=()
for lam in $LAMS; do
  run="$OUT/lam-$lam"
  $LAUNCH sefe.cli train --config "$CONFIG" --method olora --tasks "$TASKS" --out "$run" \
    --set "method_options.olora.lam_orth=$lam" ${extra[@]+"${extra[@]}"}
  runs+=("$run")
done
python -m sefe.cli report "${runs[@]}" --out "$OUT/report"
echo "report: $OUT/report/report.md"
