#!/usr/bin/env bash
# Decode (tg) side by side on a shared machine: ternlab and a peer's llama-bench alternate, one repetition
# each per round, so that slow drifts of the machine's load hit both alike; prints each round's tokens/s,
# ternlab's bandwidth bound, and the per-round ratio, then the medians.
#   scripts/bench-decode-interleaved.sh TERNLAB PEER_LLAMA_BENCH TERNLAB_MODEL PEER_MODEL [ROUNDS] [TOKENS] [-- PEER_ARGS...]
# Each engine runs in its own default environment: no setting chosen for one engine is imposed on the other
# (OMP_WAIT_POLICY=passive, which an earlier version exported for both, slows bitnet.cpp's decode about 3x
# because its threads meet at OpenMP barriers). OMP_* variables of the caller's shell are removed for both;
# TERNLAB_ENV / PEER_ENV ("VAR=value ...") give an engine its documented best settings, and are printed.
# e.g. scripts/bench-decode-interleaved.sh build/ternlab ../peers/bitnet/build/bin/llama-bench \
#        out/gguf/2b4t-i2_s.gguf out/gguf/2b4t-i2_s.gguf 7 128
set -euo pipefail
ternlab=$1 peer=$2 model=$3 peer_model=$4 rounds=${5:-7} tokens=${6:-128}
shift $(($# < 6 ? $# : 6))
[[ ${1:-} == -- ]] && shift
threads=${THREADS:-2}
for v in $(compgen -e | grep '^OMP_\|^GOMP_\|^KMP_' || true); do unset "$v"; done
read -r -a ternlab_env <<<"${TERNLAB_ENV:-}"
read -r -a peer_env <<<"${PEER_ENV:-}"
echo "environments: ternlab [${TERNLAB_ENV:-default}], peer [${PEER_ENV:-default}]; $threads threads; $(lscpu | sed -n 's/^Model name: *//p')"
ours=() theirs=() fractions=()
for ((r = 1; r <= rounds; r++)); do
  j=$(env "${ternlab_env[@]}" "$ternlab" bench "$model" -p 0 -n "$tokens" -r 1 -t "$threads" --json)
  t=$(python3 -c 'import json,sys; d=json.load(sys.stdin)["results"][0]; print(d["mean"], d.get("bandwidth_bound_tokens_per_s", 0))' <<<"$j")
  read -r tl bound <<<"$t"
  p=$(env "${peer_env[@]}" "$peer" -m "$peer_model" -p 0 -n "$tokens" -r 1 -t "$threads" -o json "$@" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')
  ratio=$(python3 -c "print(f'{$tl / $p:.3f}')")
  frac=$(python3 -c "print(f'{$tl / $bound:.3f}' if $bound > 0 else 'nan')")
  echo "round $r: ternlab $tl tokens/s (bound $bound, fraction $frac), peer $p tokens/s, ratio $ratio"
  ours+=("$tl") theirs+=("$p") fractions+=("$frac")
done
python3 - "${ours[*]}" "${theirs[*]}" "${fractions[*]}" <<'PY'
import statistics as st, sys
a, b, f = ([float(x) for x in s.split()] for s in sys.argv[1:4])
r = [x / y for x, y in zip(a, b)]
print(f"median: ternlab {st.median(a):.2f} tokens/s, peer {st.median(b):.2f}, ratio {st.median(r):.3f} "
      f"(per-round ratios {min(r):.3f}..{max(r):.3f}), fraction of the bound {st.median(f):.3f} "
      f"({min(f):.3f}..{max(f):.3f})")
PY
