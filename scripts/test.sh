#!/usr/bin/env bash
# Builds ternlab and runs every test. Usage: scripts/test.sh [--sanitize] [--fuzz SECONDS]
#   (default)     Release build in build/, all GoogleTest suites through ctest; with the CUDA backend
#                 (-DTERNLAB_CUDA=ON) when nvcc is installed: its tests skip themselves without a GPU
#   --sanitize    ASan + UBSan build (gcc) in build-asan/, all suites but the slow ones
#   --fuzz N      clang build in build-fuzz/ with ASan + UBSan and libFuzzer: all suites but the slow ones
#                 under the sanitizers, then each fuzz target for N seconds (CI: one build for both)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null

mode=release
fuzz_seconds=0
while (($#)); do
  case "$1" in
    --sanitize) mode=sanitize ;;
    --fuzz) mode=fuzz; fuzz_seconds="${2:?--fuzz needs seconds}"; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
jobs=$(nproc)
cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi

case "$mode" in
  release)
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTERNLAB_CUDA="$cuda" >/dev/null
    cmake --build build -j "$jobs"
    ctest --test-dir build --output-on-failure -j "$jobs"
    ;;
  sanitize)
    cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERNLAB_SANITIZE=ON -DTERNLAB_BENCH=OFF >/dev/null
    cmake --build build-asan -j "$jobs"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE slow
    ;;
  fuzz)
    # -O1 with line tables only: a third less compile time than RelWithDebInfo, and still full stack traces.
    CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_C_FLAGS="-O1 -gline-tables-only" -DCMAKE_CXX_FLAGS="-O1 -gline-tables-only" -DTERNLAB_FUZZ=ON \
      -DTERNLAB_TESTS=ON -DTERNLAB_BENCH=OFF >/dev/null
    cmake --build build-fuzz -j "$jobs"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --test-dir build-fuzz --output-on-failure -j "$jobs" -LE slow
    for f in build-fuzz/tests/fuzz/fuzz_*; do
      [ -x "$f" ] || continue
      corpus="build-fuzz/corpus-$(basename "$f")"
      mkdir -p "$corpus"
      echo "== $(basename "$f") for ${fuzz_seconds}s"
      seeds="tests/fuzz/seeds/$(basename "$f")"
      [ -d "$seeds" ] || seeds=""
      "$f" -max_total_time="$fuzz_seconds" -print_final_stats=1 "$corpus" $seeds 2>&1 | tail -n 3
    done
    echo "fuzz: no crashes"
    ;;
esac
