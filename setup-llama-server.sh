#!/usr/bin/env bash
# Build llama.cpp's own server (llama-server: parallel slots, /health, token-array prompts) from the
# llama.cpp source that the llama-cpp-python sdist on PyPI vendors, once per machine (about 7 minutes
# on 2 cores), into the user cache; link it as .venv/bin/llama-server. Needs cmake and a C++ compiler.
# The same CPU flags as setup.sh's llama.cpp engine (the native build's AMX kernels crash here).
set -euo pipefail
cd "$(dirname "$0")"
version=0.3.36  # llama-cpp-python's, as in setup.sh
cache=${XDG_CACHE_HOME:-$HOME/.cache}/specstep/llama-server-$version
bin=$cache/llama-server
if [ ! -x "$bin" ]; then
  command -v cmake >/dev/null || { echo "setup-llama-server.sh: cmake is not installed" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work" 2>/dev/null
  tar xzf "$work"/llama_cpp_python-$version.tar.gz -C "$work"
  src=$work/llama_cpp_python-$version/vendor/llama.cpp
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_BMI2=ON >"$work/cmake.log" 2>&1 || { tail -20 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >>"$work/cmake.log" 2>&1 \
    || { tail -20 "$work/cmake.log" >&2; exit 1; }
  mkdir -p "$cache"
  cp "$work/build/bin/llama-server" "$bin.tmp" && mv "$bin.tmp" "$bin"
fi
ln -sf "$bin" .venv/bin/llama-server
