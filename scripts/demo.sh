#!/usr/bin/env bash
# The main job on an embedded default, in a few minutes on a 2-core machine: train a byte-level BPE
# tokenizer on the Brown corpus, pretrain a small BitNet b1.58 (1M parameters) on it with the CPU training
# engine, measure its perplexity under the study's protocol (seed) and llama.cpp's (llama), then run the
# study's pipeline on it — progressive pruning with QAT/STE fine-tuning (5% then 10%) against a 0% control
# with the same token budget, and the snap to exact ternary exported in both Microsoft layouts.
# Needs nothing beyond Debian and npm packages; every step is seeded.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target ternlab
export OMP_WAIT_POLICY=passive
tl=./build/ternlab
out=out/demo
rm -rf "$out"
mkdir -p "$out"
$tl tokenizer train --corpus brown --split train --vocab-size 2048 -o "$out/tokenizer.json"
$tl init --preset tiny --hidden 128 --ffn 352 --layers 4 --heads 4 --kv-heads 2 --vocab 2048 --ctx 256 \
  --tokenizer "$out/tokenizer.json" --seed 1 -o "$out/init"
$tl pretrain "$out/init" -o "$out/model" --steps 400 --batch 16 --seq-len 128 --lr 3e-3 --eval-every 100 \
  --log-every 50
$tl info "$out/model"
$tl ppl "$out/model" --corpus brown --split test --protocol seed
$tl ppl "$out/model" --corpus brown --split test --protocol llama --ctx 256
$tl finetune "$out/model" -o "$out/finetune" --levels 5,10 --steps 25 --batch 16 --seq-len 128 --lr 5e-4 \
  --control --log-every 25
$tl snap "$out/finetune/pruned" -o "$out/snap" --windows 50
echo "demo: reports in $out/model/train_report.md, $out/finetune/finetune_report.md, $out/snap/snap_report.md"
