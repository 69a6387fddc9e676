#!/usr/bin/env node
// Reference BPE trainer for tests/text/test_bpe_train.cpp: Hugging Face tokenizers (npm "tokenizers", or the
// package directory in $TERNLAB_HF_TOKENIZERS) trains a BPE model on a text file and writes its merges.
//
//   node tests/text/bpe_parity.mjs corpus.txt template.json out.json
//
// The tokenizer is template.json's pre-tokenizer over an empty BPE model; Tokenizer.train uses the BPE
// model's default trainer (vocab_size 30000, min_frequency 0, alphabet = characters seen) and reads the file
// line by line, newlines kept. out.json: {"merges": ["left right", ...], "vocab_size": N, "seconds": S}.
// Exits 77 when the package is not installed.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [corpus, template, output] = process.argv.slice(2);
if (!corpus || !template || !output) {
  console.error('usage: node tests/text/bpe_parity.mjs corpus.txt template.json out.json');
  process.exit(2);
}

let mod;
try {
  const dir = process.env.TERNLAB_HF_TOKENIZERS;
  mod = await import(dir ? pathToFileURL(path.join(dir, 'index.js')).href : 'tokenizers');
} catch (e) {
  console.log(`bpe_parity: Hugging Face tokenizers is not installed (${e.code ?? e.message})`);
  process.exit(77);
}
const Tokenizer = mod.Tokenizer ?? mod.default.Tokenizer;

const t = JSON.parse(fs.readFileSync(template, 'utf8'));
const doc = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: t.pre_tokenizer,
  post_processor: null,
  decoder: t.decoder,
  model: { type: 'BPE', dropout: null, unk_token: null, vocab: {}, merges: [] },
};
const tok = Tokenizer.fromString(JSON.stringify(doc));
const t0 = performance.now();
tok.train([corpus]);
const seconds = (performance.now() - t0) / 1000;
// Older and newer releases write merges as "a b" or ["a", "b"]; normalise to strings.
const tmp = `${output}.model.json`;
tok.save(tmp);
const saved = JSON.parse(fs.readFileSync(tmp, 'utf8'));
fs.unlinkSync(tmp);
const merges = saved.model.merges.map((m) => (Array.isArray(m) ? `${m[0]} ${m[1]}` : m));
fs.writeFileSync(output, JSON.stringify({ merges, vocab_size: Object.keys(saved.model.vocab).length, seconds }));
console.log(`bpe_parity (HF tokenizers): ${merges.length} merges in ${seconds.toFixed(2)} s`);
