#!/usr/bin/env bash
# The main job: the RPT study (every claim with its controls, 3 seeds, intervals, a verdict per claim) on the
# BitNet b1.58 model this repository ships (models/study-5m), on this CPU. About 10 minutes after the build on
# a 2-core machine. The report: out/study/report.md, report.html, results.json (docs/study.md,
# docs/reproduction.md). Extra arguments go to `ternlab study` (e.g. --only c1,c4, --seeds 5, --plan).
# RESUME=1 continues an interrupted study in out/study instead of starting afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target ternlab
(cd models/study-5m && sha256sum --quiet -c SHA256SUMS)
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"  # the setting docs/reproduction.md's times were measured with
out=out/study
[ "${RESUME:-0}" = 1 ] || rm -rf "$out"
./build/ternlab study models/study-5m -o "$out" "$@"
echo "study: report in $out/report.md and $out/report.html, numbers in $out/results.json"
