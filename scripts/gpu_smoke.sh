#!/usr/bin/env bash
# The GPU check run on a lent CUDA machine (see docs/BENCHMARKS.md): a bf16 training smoke of the tiny model
# (LoRA and RegLoRA over three coin-mini tasks, evaluation after every stage, report) and the RegLoRA
# penalty benchmark. Wheels for packages the machine lacks travel in .whl/ (see the device notes).
# PARTS picks the sections: "base" (the above) and "methods" (issue 18: O-LoRA and LoTA in bf16 on CUDA over
# two coin-mini tasks, LoTA killed inside stage 2 after its mask is saved and resumed, RegLoRA with
# accumulate: concat, MoELoRA, `sefe eval run` on each stage-2 folder, and the regularisers' share of a LoRA
# step on a 7B-shaped decoder stack). Default: both;  PARTS=methods bash scripts/gpu_smoke.sh  for one.
set -euo pipefail
PARTS=${PARTS:-"base methods"}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/sefe
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 SEFE_CACHE=/tmp/sefe-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
if [[ " $PARTS " == *" base "* ]]; then
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
fi

if [[ " $PARTS " == *" methods "* ]]; then
  M="$OUT/methods.txt"
  two=(--config configs/coin-mini.yaml --tasks ScienceQA,TextVQA --set model.dtype=bf16
       --set train.gradient_checkpointing=true --set train.max_steps=6 --set train.save_steps=2)
  train() {  # train <method> <extra args...>: one run, its last lines and wall time in methods.txt
    local m=$1; shift
    local t0; t0=$(date +%s)
    python3 -m sefe.cli train "${two[@]}" --method "${m%%-*}" --out "/tmp/runs/$m" "$@" > "/tmp/runs-$m.log" 2>&1 \
      && echo "train $m bf16: ok, $(( $(date +%s) - t0 )) s" | tee -a "$M" \
      || { echo "train $m bf16: FAILED" | tee -a "$M"; tail -5 "/tmp/runs-$m.log" | tee -a "$M"; }
  }
  mkdir -p /tmp/runs
  train olora   # stage 2 has the orthogonality term: the earlier A's must follow the model onto the GPU
  train reglora-concat --set reglora.accumulate=concat
  train moelora
  # LoTA: killed inside stage 2 once calibration has saved its mask, then resumed with the same command (the
  # gradient-mask hooks are registered while the model is on the CPU and must follow it onto the GPU)
  lota=(--set method_options.lota.calibration_steps=2)
  python3 -m sefe.cli train "${two[@]}" --method lota --out /tmp/runs/lota "${lota[@]}" > /tmp/runs-lota-1.log 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ ! -e /tmp/runs/lota/2_TextVQA.partial/lota_mask.safetensors ]; do sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true  # at once: on a GPU stage 2 is seconds
  if [ -e /tmp/runs/lota/2_TextVQA.partial/lota_mask.safetensors ] && [ ! -e /tmp/runs/lota/2_TextVQA ]; then
    echo "lota: killed inside stage 2 after its mask was saved" | tee -a "$M"
  else
    echo "lota: the kill missed stage 2 (see /tmp/runs-lota-1.log)" | tee -a "$M"
  fi
  train lota "${lota[@]}"
  grep -h "resuming stage\|discarding" /tmp/runs-lota.log | tee -a "$M" || true
  for m in olora reglora-concat moelora lota; do
    python3 -m sefe.cli eval run --model "/tmp/runs/$m/2_TextVQA" --data-root data/coin-mini \
      --tasks ScienceQA,TextVQA --limit 8 --max-new-tokens 8 --out "/tmp/eval-$m" > "/tmp/eval-$m.log" 2>&1 \
      && echo "eval run $m stage 2: $(cat /tmp/eval-$m/*.jsonl | wc -l) predictions" | tee -a "$M" \
      || { echo "eval run $m stage 2: FAILED" | tee -a "$M"; tail -3 "/tmp/eval-$m.log" | tee -a "$M"; }
  done
  python3 -m sefe.cli eval run --model /tmp/runs/moelora/2_TextVQA/merged --data-root data/coin-mini \
    --tasks ScienceQA --limit 2 --out /tmp/eval-moelora-merged 2>&1 | tail -1 | sed 's/^/moelora merged\/ (must be refused): /' | tee -a "$M" || true
  python3 bench/penalty_share.py ${SHARE_ARGS:-} --out "$OUT/penalty_share.json" > /dev/null  # SHARE_ARGS: e.g. a CPU dry run
  python3 -c "
import json; d = json.load(open('$OUT/penalty_share.json'))
for name, r in d['terms'].items():
    print(f\"{name}: {r['share_alone']:.2%} of a LoRA step ({d['lora_step_s']*1e3:.0f} ms, 7B-shaped, goal <= 2 %): {'ok' if r['meets_goal'] else 'OVER'}\")
" | tee -a "$M"
fi
