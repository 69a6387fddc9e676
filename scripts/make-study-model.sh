#!/usr/bin/env bash
# Makes the BitNet b1.58 model that `ternlab study` runs on by default (models/study-5m; docs/reproduction.md):
# a byte-level BPE vocabulary of 4096 tokens and a 5.8M-parameter model (6 layers, hidden 256, FFN 768,
# 4 heads / 2 KV heads, ReLU², tied embeddings) pretrained on the Brown corpus's train split and the King James
# Bible. The study fine-tunes it on State of the Union addresses (sotu:train) and scores it on their held-out
# addresses, on the Brown test split and on Moby-Dick, none of which it was pretrained on.
#
#   scripts/make-study-model.sh prepare OUT            tokenizer, token files, random init (CPU, seconds)
#   scripts/make-study-model.sh train OUT [DEVICE]      pretraining (DEVICE cpu or cuda; cuda: minutes on an H100)
#   scripts/make-study-model.sh package OUT MODEL_DIR   copies the model, its log and checksums into MODEL_DIR
#
# TERNLAB names the binary (default build/ternlab). Every step is seeded; the GPU run is deterministic on a
# given card.
set -euo pipefail
cd "$(dirname "$0")/.."
tl="${TERNLAB:-build/ternlab}"
stage="${1:?usage: make-study-model.sh prepare|train|package OUT ...}"
out="${2:?usage: make-study-model.sh $stage OUT ...}"

# The shape and the pretraining schedule (about 13.6 passes over 2.4M tokens).
init_flags=(--preset tiny --hidden 256 --ffn 768 --layers 6 --heads 4 --kv-heads 2 --vocab 4096 --ctx 256 --seed 1)
train_flags=(--steps 2000 --batch 64 --seq-len 256 --lr 2e-3 --min-lr 2e-4 --warmup 200 --weight-decay 0.1
  --eval-every 500 --log-every 250 --protocol seed --windows 200 --save-dtype bf16)

case "$stage" in
  prepare)
    mkdir -p "$out"
    "$tl" tokenizer train --corpus brown:train,kjv --vocab-size 4096 -o "$out/tokenizer.json"
    "$tl" data prepare --tokenizer "$out/tokenizer.json" --corpus brown:train,kjv --protocol plain -o "$out/pretrain.tok"
    "$tl" data prepare --tokenizer "$out/tokenizer.json" --corpus brown:validation --protocol seed -o "$out/val.tok"
    "$tl" init "${init_flags[@]}" --tokenizer "$out/tokenizer.json" -o "$out/init"
    ;;
  train)
    device="${3:-cuda}"
    # validation: the seed protocol on Brown's validation split (never the test split the study scores)
    "$tl" pretrain "$out/init" -o "$out/model" --train-tokens "$out/pretrain.tok" --corpus tokens \
      --input "$out/val.tok" "${train_flags[@]}" --device "$device"
    ;;
  package)
    dest="${3:?usage: make-study-model.sh package OUT MODEL_DIR}"
    mkdir -p "$dest"
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json train_log.csv train_report.md \
      train_report.json; do
      cp "$out/model/$f" "$dest/"
    done
    (cd "$dest" && sha256sum config.json model.safetensors tokenizer.json tokenizer_config.json >SHA256SUMS)
    ;;
  *)
    echo "unknown stage: $stage (prepare, train or package)" >&2
    exit 2
    ;;
esac
