// `ternlab ppl`: a checkpoint and a corpus (Brown split, WikiText raw file, text, JSONL, or a token file)
// in, a perplexity under a named protocol out.
#pragma once
#include <filesystem>
#include <string>

#include "eval/ppl.hpp"

namespace tl {

struct PplRunOptions {
  std::filesystem::path checkpoint;
  std::filesystem::path tokenizer;  // default: <checkpoint>/tokenizer.json
  std::string corpus = "brown";     // brown | wikitext | text | jsonl | tokens
  std::filesystem::path input;      // corpus file/dir (default Brown dir) or the token file
  std::string split = "test";
  PplOptions ppl;
};

struct PplRun {
  PplResult result;
  std::string checkpoint, corpus, split, input, preparation;
  size_t corpus_tokens = 0;  // tokens in the prepared stream
  double prepare_seconds = 0;
  int threads = 0;
};

// Tokenization by protocol: seed -> the study's preparation (rows >= 20 code points, no BOS);
// llama -> the text encoded once with BOS at the start (a single file raw, as llama-perplexity reads
// it; documents joined with "\n\n" otherwise); window -> the same without BOS.
PplRun run_perplexity(const PplRunOptions& opt);

}  // namespace tl
