#!/usr/bin/env bash
# Build llama.cpp's llama-server for the throughput benchmark only (never installed by edge-ai), from the
# vendor/llama.cpp source inside the llama-cpp-python sdist that edge-ai already depends on.
# Usage: scripts/bench/build_llama_server.sh [BUILD_DIR]   -> prints the path of the binary
set -euo pipefail
dir=${1:-/tmp/edge-ai-llama-server}
mkdir -p "$dir" && cd "$dir"
[ -f llama_cpp_python-0.3.36.tar.gz ] || pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d . -q
[ -d llama_cpp_python-0.3.36 ] || tar xzf llama_cpp_python-0.3.36.tar.gz
cd llama_cpp_python-0.3.36/vendor/llama.cpp
cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build build --target llama-server -j"$(nproc)" >/dev/null
echo "$PWD/build/bin/llama-server"
