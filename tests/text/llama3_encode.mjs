#!/usr/bin/env node
// Reference encoder for the tokenizer parity tests: encodes each document of a JSONL file ({"text": ...}
// per line) and writes for each document a little-endian uint32 count followed by that many int32 ids.
//
//   node tests/text/llama3_encode.mjs in.jsonl out.bin
//       llama3-tokenizer-js, encode(text, {bos: false, eos: false})
//   node tests/text/llama3_encode.mjs in.jsonl out.bin --hf tokenizer.json
//       Hugging Face tokenizers (npm "tokenizers", or the package directory in $TERNLAB_HF_TOKENIZERS)
//       loading tokenizer.json, encode with special tokens; exits 77 when that package is not installed.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [input, output, flag, tokenizerJson] = process.argv.slice(2);
if (!input || !output || (flag !== undefined && (flag !== '--hf' || !tokenizerJson))) {
  console.error('usage: node tests/text/llama3_encode.mjs in.jsonl out.bin [--hf tokenizer.json]');
  process.exit(2);
}

async function makeEncoder() {
  if (!flag) {
    const llama3Tokenizer = (await import('llama3-tokenizer-js')).default;
    return { name: 'llama3-tokenizer-js', encode: async (text) => llama3Tokenizer.encode(text, { bos: false, eos: false }) };
  }
  let mod;
  try {
    const dir = process.env.TERNLAB_HF_TOKENIZERS;
    mod = await import(dir ? pathToFileURL(path.join(dir, 'index.js')).href : 'tokenizers');
  } catch (e) {
    console.log(`llama3_encode: Hugging Face tokenizers is not installed (${e.code ?? e.message})`);
    process.exit(77);
  }
  const Tokenizer = mod.Tokenizer ?? mod.default.Tokenizer;
  const tok = Tokenizer.fromFile(tokenizerJson);
  return {
    name: 'HF tokenizers',
    encode: async (text) => (await tok.encode(text, null, { addSpecialTokens: true })).getIds(),
  };
}

const encoder = await makeEncoder();
const lines = fs.readFileSync(input, 'utf8').split('\n').filter((l) => l.length > 0);
const chunks = [];
let total = 0;
const t0 = performance.now();
for (const line of lines) {
  const ids = await encoder.encode(JSON.parse(line).text);
  const buf = Buffer.alloc(4 + 4 * ids.length);
  buf.writeUInt32LE(ids.length, 0);
  ids.forEach((id, i) => buf.writeInt32LE(id, 4 + 4 * i));
  chunks.push(buf);
  total += ids.length;
}
const secs = (performance.now() - t0) / 1000;
fs.writeFileSync(output, Buffer.concat(chunks));
console.log(`llama3_encode (${encoder.name}): ${lines.length} documents, ${total} tokens, ${Math.round(total / secs)} tokens/s`);
