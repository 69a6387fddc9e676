#!/usr/bin/env python3
"""The RPT study's text preparation with Hugging Face `tokenizers`, for comparison with
`ternlab data prepare --protocol seed`:

    python3 tools/golden/hf_seed_tokens.py TOKENIZER_JSON WIKI_RAW_FILE OUT.bin

For each line of the file (as Python iterates a text file), t = line.strip(); keep it if len(t) >= 20;
encode without special tokens; concatenate. Writes the ids as little-endian int32.
"""
import sys

import numpy as np
from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
ids = []
rows = kept = 0
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        rows += 1
        t = line.strip()
        if len(t) < 20:
            continue
        kept += 1
        ids.extend(tok.encode(t, add_special_tokens=False).ids)
np.asarray(ids, dtype="<i4").tofile(sys.argv[3])
print(f"rows {rows}, kept {kept}, tokens {len(ids)}")
