// What the study's runner, its run executors and its aggregation share (not part of the public API).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.hpp"
#include "study/study.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"
#include "workflow/perplexity.hpp"

namespace tl::study {

inline constexpr const char* kSchema = "ternlab-study/1";
inline constexpr const char* kProtocolA = "protocol-a";

// One evaluation set: Protocol A (one part per sentence: they differ in length) or a corpus under the
// seed protocol (one part).
struct EvalSet {
  std::string name;  // "protocol-a" or the canonical corpus spec, e.g. "sotu:test"
  bool protocol_a = false;
  CorpusSpec spec;  // corpora only
  std::vector<PplData> parts;
  int64_t windows() const;  // sentences or windows
  int64_t tokens() const;   // targets scored
};

// Set indices: 0 = Protocol A, 1 = the primary corpus (held-out split of the training corpus), 2.. = the
// domain-shift corpora.
inline constexpr size_t kSetA = 0, kSetPrimary = 1;

struct Context {
  StudyOptions opt;
  Budget budget;
  fs::path dir;
  Model base;
  std::optional<Tokenizer> tok;  // set once the work starts (a Tokenizer has no empty state)
  std::vector<EvalSet> sets;
  std::vector<int32_t> train_tokens;  // the training corpus, the study's preparation
  CorpusSpec train_spec;
};

// {"<set name>": {"nll": [Σ NLL per window], "tokens": [targets per window]}} of `model` on the sets.
nlohmann::json score(const Context& ctx, const Model& model, const std::vector<size_t>& sets);
// Every set / the domain-shift sets and the primary.
std::vector<size_t> all_sets(const Context& ctx);
std::vector<size_t> corpus_sets(const Context& ctx);  // 1..n-1

// Seeds of the stochastic choices: one stream per named purpose, from the study's --seed.
uint64_t derived_seed(const Context& ctx, const std::string& purpose);

// The chain state of a progressive run: the model after a level (fp32 latents + fixed scales).
fs::path state_dir(const Context& ctx, const std::string& chain, size_t level);
void save_state(const Model& m, const fs::path& dir);
Model load_state(const fs::path& dir);

// Executes one planned run; returns its record (no timings in it).
nlohmann::json execute_run(Context& ctx, const PlannedRun& run);

// The study's config record (study.json): everything a resumed run must agree with.
nlohmann::json study_config(const StudyOptions& opt, const Budget& b, const std::string& model_sha,
                            const std::string& tokenizer_sha);

// "c2/prune/s1/L0" -> "c2_prune_s1_L0"
std::string run_file_stem(const std::string& id);

}  // namespace tl::study
