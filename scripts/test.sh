#!/usr/bin/env bash
# Builds ternlab and runs every test. Usage: scripts/test.sh [--sanitize] [--fuzz SECONDS]
#   (default)     Release build in build/, all GoogleTest suites through ctest
#   --sanitize    ASan + UBSan build in build-asan/, all suites
#   --fuzz N      clang libFuzzer build in build-fuzz/, each fuzz target for N seconds
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

case "$mode" in
  release)
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
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
    CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERNLAB_FUZZ=ON \
      -DTERNLAB_TESTS=OFF -DTERNLAB_BENCH=OFF >/dev/null
    cmake --build build-fuzz -j "$jobs"
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
