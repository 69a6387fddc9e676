#!/usr/bin/env bash
# The main job on an embedded default: build ternlab, make a tiny random BitNet b1.58 checkpoint with
# `ternlab init`, inspect it, and measure its perplexity on the Brown corpus test split under the
# study's protocol (seed) and llama.cpp's (llama). Needs nothing beyond Debian and npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target ternlab
out=out/demo
mkdir -p "$out"
./build/ternlab init --preset tiny --seed 1 --force -o "$out/tiny"
./build/ternlab info "$out/tiny"
./build/ternlab ppl "$out/tiny" --corpus brown --split test --protocol seed
./build/ternlab ppl "$out/tiny" --corpus brown --split test --protocol llama --ctx 128 --windows 100 --json
