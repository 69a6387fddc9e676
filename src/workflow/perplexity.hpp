// `ternlab ppl`: a checkpoint and a corpus (Brown split, WikiText raw file, text, JSONL, or a token file)
// in, a perplexity under a named protocol out.
#pragma once
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "eval/ppl.hpp"
#include "workflow/device.hpp"

namespace tl {

struct PplRunOptions {
  std::filesystem::path checkpoint;  // a checkpoint directory or a GGUF file (formats/import.hpp)
  std::string hidden_act;            // GGUF only: supplies or overrides the file's FFN activation
  std::filesystem::path tokenizer;   // default: <checkpoint>/tokenizer.json
  std::string corpus = "brown";      // brown | wikitext | text | jsonl | tokens
  std::filesystem::path input;       // corpus file/dir (default Brown dir) or the token file
  std::string split = "test";
  // Whether `split` was asked for (`ternlab ppl --split`): then it applies, or is refused where the input has
  // no splits. When not, it is the default for a corpus with splits, and a single file is its own split.
  bool split_given = false;
  PplOptions ppl;
  Device device = Device::Cpu;  // cuda: scored by cuda::DeviceModel (NLL on the GPU)
};

struct PplRun {
  PplResult result;
  std::string checkpoint, corpus, split, input, preparation;
  size_t corpus_tokens = 0;  // tokens in the prepared stream
  double prepare_seconds = 0;
  int threads = 0;
  std::string device = "cpu";  // what scored it
};

// Tokenization by protocol: seed -> the study's preparation (rows >= 20 code points, no BOS);
// llama -> the text encoded once with BOS at the start (a single file raw, as llama-perplexity reads
// it; documents joined with "\n\n" otherwise); window -> the same without BOS.
PplRun run_perplexity(const PplRunOptions& opt);

struct Model;
class Tokenizer;

// run_perplexity in two steps, so a sweep tokenizes once and scores many models on the same windows.
struct PplData {
  std::vector<PplWindow> windows;
  PplOptions ppl;  // opt.ppl with bos_id resolved
  PplRun run;      // everything but `result`
  Device device = Device::Cpu;
};
// Tokenizes the corpus for `model` (its vocabulary, BOS, context limit) and makes the protocol's windows.
// tokenizer: the model's own (a GGUF's); null: opt.tokenizer, else <checkpoint>/tokenizer.json.
PplData prepare_perplexity(const PplRunOptions& opt, const Model& model,
                           const Tokenizer* tokenizer = nullptr);
// Scores `model` on the prepared windows: tl::CpuModel, the fp32 reference forward, or on the GPU
// (data.device): cuda::DeviceModel with the same quantizers (fixed scales when the model has them).
PplResult evaluate_perplexity(const Model& model, const PplData& data);
// The same on several prepared sets (windows of any shape, one device for all) with one backend instance:
// the model is quantized, or uploaded to the GPU, once. Results in the order of `sets`.
std::vector<PplResult> evaluate_perplexity(const Model& model, std::span<const PplData* const> sets);

}  // namespace tl
