#include "workflow/perplexity.hpp"

#include <algorithm>
#include <chrono>

#include "core/error.hpp"
#include "core/log.hpp"
#include "cpu/forward.hpp"
#include "cpu/threads.hpp"
#include "formats/checkpoint.hpp"
#include "formats/import.hpp"
#include "formats/open_model.hpp"
#include "text/corpus.hpp"
#include "text/token_file.hpp"
#include "text/tokenizer.hpp"
#include "workflow/backends.hpp"

namespace tl {

namespace fs = std::filesystem;

PplData prepare_perplexity(const PplRunOptions& opt, const Model& model, const Tokenizer* tokenizer) {
  PplData data;
  PplRun& run = data.run;
  run.checkpoint = opt.checkpoint.string();
  run.corpus = opt.corpus;
  run.threads = num_threads();
  require_device(opt.device);  // before any tokenizing: a clear error early
  data.device = opt.device;
  run.device = describe_device(opt.device);
  const int64_t V = model.config.vocab_size;

  std::vector<int32_t> tokens;
  const auto t0 = std::chrono::steady_clock::now();
  int32_t bos = int32_t(model.config.bos_token_id);
  if (opt.corpus == "tokens") {
    TL_CHECK(!opt.input.empty(), "ppl: --corpus tokens needs --input TOKEN_FILE");
    TokenFile tf = read_token_file(opt.input);
    TL_CHECK(tf.meta.vocab_size <= uint32_t(V),
             "ppl: {} was made for a vocabulary of {} tokens, the model has {}", opt.input.string(),
             tf.meta.vocab_size, V);
    if (opt.ppl.protocol == PplProtocol::Seed && !tf.meta.protocol.empty() && tf.meta.protocol != "seed")
      log_warn("ppl: {} was prepared with protocol '{}', not 'seed'", opt.input.string(), tf.meta.protocol);
    if (opt.ppl.protocol == PplProtocol::Llama && !tf.meta.bos)
      log_warn("ppl: {} has no BOS at its start; llama-perplexity's stream starts with one",
               opt.input.string());
    tokens = std::move(tf.tokens);
    run.split = tf.meta.split;
    run.input = opt.input.string();
    run.preparation = tf.meta.protocol.empty() ? "token file" : "token file (" + tf.meta.protocol + ")";
  } else {
    // The model's own tokenizer (a GGUF's, passed in) unless --tokenizer overrides it.
    const bool own = tokenizer && opt.tokenizer.empty();
    const fs::path tok_path = own ? opt.checkpoint : resolve_tokenizer_path(opt.checkpoint, opt.tokenizer);
    const Tokenizer tok = own ? *tokenizer : Tokenizer::from_file(tok_path);
    TL_CHECK(tok.vocab_size() <= size_t(V), "ppl: tokenizer {} has {} tokens, the model only {}",
             tok_path.string(), tok.vocab_size(), V);
    if (tok.bos_id() >= 0) bos = tok.bos_id();
    PrepareOptions p;
    p.corpus = parse_corpus_kind(opt.corpus);
    p.input = opt.input;
    p.split = parse_split(opt.split);
    std::error_code ec;
    const bool single_file = !opt.input.empty() && fs::is_regular_file(opt.input, ec);
    // A default split applies only to a corpus with splits; a single file is then its own split.
    p.split_given = opt.split_given || (!single_file && corpus_has_splits(p.corpus, opt.input));
    switch (opt.ppl.protocol) {
      case PplProtocol::Seed:
        p.protocol = PrepProtocol::Seed;
        break;
      case PplProtocol::Llama:
      case PplProtocol::Window:
        // Raw (the file's bytes as stored, llama-perplexity's way) is for one WikiText or text file; the
        // corpora ternlab splits into documents (kjv, sotu, moby-dick, JSONL) are read as plain text.
        p.protocol = single_file && (p.corpus == CorpusKind::WikiText || p.corpus == CorpusKind::Text)
                         ? PrepProtocol::Raw
                         : PrepProtocol::Plain;
        p.bos = opt.ppl.protocol == PplProtocol::Llama;
        break;
    }
    PreparedTokens prep = prepare_corpus(p, tok);
    tokens = std::move(prep.tokens);
    run.split = p.split_given ? std::string(split_name(p.split)) : "";
    run.input = prep.inputs.size() == 1 ? prep.inputs[0].string()
                                        : (prep.inputs.empty() ? "" : prep.inputs[0].parent_path().string());
    run.preparation = std::string(prep_protocol_name(p.protocol)) + (p.bos ? " + BOS" : "");
  }
  run.prepare_seconds = seconds_since(t0);
  run.corpus_tokens = tokens.size();

  data.ppl = opt.ppl;
  data.ppl.bos_id = bos;
  data.windows = make_ppl_windows(tokens, data.ppl);
  TL_CHECK(data.windows[0].tokens.size() <= size_t(model.config.max_position_embeddings),
           "ppl: context {} exceeds the model's max_position_embeddings {}", data.windows[0].tokens.size(),
           model.config.max_position_embeddings);
  return data;
}

namespace {
// Every set through one GPU scorer (the codes are computed once for all windows of all sets).
std::vector<PplResult> evaluate_perplexity_gpu(const Model& model, std::span<const PplData* const> sets) {
  int64_t max_tokens = 0;
  for (const PplData* d : sets)
    max_tokens = std::max(max_tokens, d->ppl.batch * int64_t(d->windows.at(0).tokens.size()));
  const PositionLossFn losses = make_gpu_position_losses(model, max_tokens);
  std::vector<PplResult> out;
  for (const PplData* d : sets)
    out.push_back(
        evaluate_ppl_nll(d->windows, model.config.vocab_size, nll_from_position_losses(losses), d->ppl));
  return out;
}
}  // namespace

std::vector<PplResult> evaluate_perplexity(const Model& model, std::span<const PplData* const> sets) {
  TL_CHECK(!sets.empty(), "ppl: no window sets to score");
  const Device device = sets[0]->device;
  for (const PplData* d : sets) {
    TL_CHECK(d->device == device, "ppl: window sets for different devices in one call");
    TL_CHECK(!d->windows.empty(), "ppl: a window set is empty");
  }
  if (device == Device::Cuda) return evaluate_perplexity_gpu(model, sets);
  require_device(device);
  const int64_t V = model.config.vocab_size;
  CpuModel cpu(model);
  std::vector<float> hidden, rows;
  const int64_t C = model.config.hidden_size;
  auto logits = [&](std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first,
                    std::vector<float>& out) {
    cpu.forward(toks, B, T, hidden);
    const int64_t n = T - 1 - first;
    rows.resize(size_t(B * n * C));
    for (int64_t b = 0; b < B; ++b)
      std::copy(hidden.begin() + (b * T + first) * C, hidden.begin() + (b * T + first + n) * C,
                rows.begin() + b * n * C);
    out.resize(size_t(B * n * V));
    cpu.logits(rows.data(), B * n, out.data());
  };
  std::vector<PplResult> out;
  for (const PplData* d : sets) out.push_back(evaluate_ppl(d->windows, V, logits, d->ppl));
  return out;
}

PplResult evaluate_perplexity(const Model& model, const PplData& data) {
  const PplData* one[] = {&data};
  return evaluate_perplexity(model, one).front();
}

PplRun run_perplexity(const PplRunOptions& opt) {
  OpenOptions oo;
  oo.hidden_act = opt.hidden_act;
  // A GGUF file brings its own tokenizer; a checkpoint's is read by prepare_perplexity when it encodes text.
  oo.read_tokenizer = is_gguf_file(opt.checkpoint);
  const OpenedModel opened = open_model(opt.checkpoint, oo);
  if (opened.gguf) log_info("ppl: {}", opened.gguf->describe());  // scored on the reference
  PplData data = prepare_perplexity(opt, opened.model, opened.tokenizer ? &*opened.tokenizer : nullptr);
  data.run.result = evaluate_perplexity(opened.model, data);
  return std::move(data.run);
}

}  // namespace tl
