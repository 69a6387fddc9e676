#!/usr/bin/env bash
# Writes the King James Bible from the Debian package bible-kjv as the text of `--corpus kjv`: one line per
# chapter (1,189), the chapter's verses without their references ("Ge1:1 "), joined by single spaces, in
# canonical order (Genesis 1 ... Revelation 22). Atomic: written to a temporary name, then renamed.
#   scripts/build-kjv.sh data/kjv/kjv.txt
set -euo pipefail
out=${1:?usage: scripts/build-kjv.sh OUT.txt}
command -v bible >/dev/null || {
  echo "build-kjv.sh: the 'bible' program is missing; install the Debian package bible-kjv" >&2
  exit 1
}
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

# bible prints one verse per line, "<book><chapter>:<verse> <text>" (e.g. "1Sm3:10 And the LORD came");
# a chapter ends where "<book><chapter>" changes. Verses are trimmed so that the joins are single spaces.
bible -f "Gen1:1-Rev22:21" | awk '
  $1 !~ /^[1-3]?[A-Za-z]+[0-9]+:[0-9]+$/ {
    printf "build-kjv.sh: line %d does not start with a verse reference: %s\n", NR, $0 > "/dev/stderr"
    exit 1
  }
  {
    chapter = $1; sub(/:[0-9]+$/, "", chapter)
    text = $0; sub(/^[^ ]+ +/, "", text); sub(/ +$/, "", text)
    if (chapter == last) printf " %s", text
    else { if (NR > 1) printf "\n"; printf "%s", text; last = chapter }
  }
  END { if (NR) printf "\n" }' >"$tmp"

chapters=$(wc -l <"$tmp")
words=$(wc -w <"$tmp")
if [ "$chapters" -ne 1189 ]; then
  echo "build-kjv.sh: bible printed $chapters chapters, expected 1189 (Genesis 1 to Revelation 22)" >&2
  exit 1
fi
mv "$tmp" "$out"
echo "wrote $out: $chapters chapters, $words words"
