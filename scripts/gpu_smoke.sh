#!/usr/bin/env bash
# The GPU check run on a lent CUDA machine (see docs/BENCHMARKS.md): a bf16 training smoke of the tiny model
# (LoRA and RegLoRA over three coin-mini tasks, evaluation after every stage, report) and the RegLoRA
# penalty benchmark. Wheels for packages the machine lacks travel in .whl/ (see the device notes).
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/sefe
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 SEFE_CACHE=/tmp/sefe-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
for m in lora reglora; do
  t0=$(date +%s.%N)
  python3 -m sefe.cli train --config configs/coin-mini.yaml --method "$m" --out "/tmp/runs/$m" \
    --set model.dtype=bf16 --set train.gradient_checkpointing=true 2>&1 | grep -v "Loading weights" | tail -4
  t1=$(date +%s.%N)
  echo "train $m bf16 cuda: $(python3 -c "print(round($t1-$t0,1))") s wall (3 stages, eval after each)" | tee -a "$OUT/gpu.txt"
done
python3 -m sefe.cli report /tmp/runs/lora /tmp/runs/reglora --out "$OUT/report" --no-plots | tail -2
cp "$OUT/report/report.md" "$OUT/report.md"
python3 -m sefe.cli bench reglora --device cuda --dtype bfloat16 --reps 20 --no-storage --out "$OUT/bench_bf16.json" > /dev/null
python3 -c "
import json; d = json.load(open('$OUT/bench_bf16.json'))
rows = d['rows'] if isinstance(d, dict) else d
for r in rows: print(r['shape'], r['density'], r.get('impl'), r['ours_s'], r['reference_s'], r['ours_peak_mb'], r['reference_peak_mb'])
" | tee -a "$OUT/gpu.txt"
