// ternlab tokenizer train: learn a byte-level BPE vocabulary from a corpus and write a standard
// tokenizer.json (LLaMA-3 pre-tokenizer, BOS template). See docs/tokenizer.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "text/bpe_train.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"

namespace tl::cli {
namespace {

struct TrainArgs {
  std::string corpus = "brown", input, split = "train", field = "text", output;
  int64_t vocab_size = 0;
  int64_t min_frequency = 2;  // signed, so that a negative value is an error and does not wrap
  std::vector<std::string> specials;
  bool no_special = false, per_line = false, force = false, json = false;
};

std::vector<std::string> texts_of(std::vector<Document>&& docs) {
  std::vector<std::string> t;
  t.reserve(docs.size());
  for (auto& d : docs) t.push_back(std::move(d.text));
  return t;
}

nlohmann::json compression_json(const Compression& c) {
  return {{"documents", c.documents},
          {"bytes", c.bytes},
          {"words", c.words},
          {"tokens", c.tokens},
          {"tokens_per_word", c.tokens_per_word()},
          {"bytes_per_token", c.bytes_per_token()}};
}

// The corpora to read: --corpus KIND [--split S] [--input P], or --corpus as a comma-separated list of
// KIND[:SPLIT][=PATH] (e.g. brown:train,kjv). *split_applied: the one-kind form's split, where one applies.
std::vector<CorpusSpec> train_specs(const TrainArgs& a, bool split_given, bool field_given,
                                    std::optional<Split>* split_applied) {
  std::vector<CorpusSpec> specs;
  if (is_corpus_spec_list(a.corpus)) {
    specs = corpus_spec_list(a.corpus, split_given, !a.input.empty(), field_given, a.per_line);
  } else {
    CorpusSpec spec;
    try {
      spec.kind = parse_corpus_kind(a.corpus);
    } catch (const Error& e) {
      fail("--corpus: {}", e.what());
    }
    const CorpusKind kind = spec.kind;
    const bool with_split = kind == CorpusKind::Brown || kind == CorpusKind::WikiText ||
                            kind == CorpusKind::Sotu || kind == CorpusKind::MobyDick ||
                            kind == CorpusKind::Kjv;
    TL_CHECK(with_split || !split_given,
             "--split applies to --corpus brown, wikitext, sotu, moby-dick or kjv only");
    TL_CHECK(kind == CorpusKind::Jsonl || !field_given, "--field applies to --corpus jsonl only");
    TL_CHECK(kind == CorpusKind::Text || !a.per_line, "--per-line applies to --corpus text only");
    spec.input = a.input;
    const bool found = kind == CorpusKind::Brown || kind == CorpusKind::Sotu ||
                       kind == CorpusKind::MobyDick ||
                       kind == CorpusKind::Kjv;  // default_corpus_input finds these
    TL_CHECK(found || !spec.input.empty(), "--corpus {} needs --input PATH", a.corpus);
    // The split (default train) applies wherever the input has splits; naming one elsewhere is an error.
    spec.split = parse_split(a.split);
    spec.split_given = split_given || corpus_has_splits(kind, spec.input);
    if (spec.split_given) *split_applied = spec.split;
    specs.push_back(spec);
  }
  return specs;
}

void run_train(const TrainArgs& a, bool split_given, bool special_given, bool field_given) {
  std::optional<Split> split;
  const std::vector<CorpusSpec> specs = train_specs(a, split_given, field_given, &split);
  TL_CHECK(!(a.no_special && special_given), "--no-special and --special exclude each other");
  TL_CHECK(!a.field.empty(), "--field must not be empty");
  TL_CHECK(a.min_frequency >= 0, "--min-frequency must be >= 0, found {}", a.min_frequency);
  std::error_code ec;
  TL_CHECK(a.force || !fs::exists(a.output, ec), "{} exists; pass --force to replace it", a.output);

  BpeTrainOptions opt;
  opt.vocab_size = a.vocab_size;
  opt.min_frequency = uint64_t(a.min_frequency);
  if (a.no_special) opt.special_tokens.clear();
  if (special_given) opt.special_tokens = a.specials;

  const auto t0 = std::chrono::steady_clock::now();
  std::string input;  // the paths read
  std::optional<fs::path> brown_dir;
  std::vector<std::string> texts;
  for (const auto& spec : specs) {
    const fs::path path = spec.input.empty() ? default_corpus_input(spec.kind) : spec.input;
    if (spec.kind == CorpusKind::Brown && !brown_dir) brown_dir = path;
    if (!input.empty()) input += ',';
    input += path.string();
    std::vector<std::string> t = texts_of(load_corpus(spec, a.per_line, a.field));
    TL_CHECK(!t.empty(), "{}: the corpus holds no documents", path.string());
    std::move(t.begin(), t.end(), std::back_inserter(texts));
  }
  const double secs_read = seconds_since(t0);

  const BpeTrainResult r = train_bpe(std::span<const std::string>(texts), opt);
  const Tokenizer tok = r.tokenizer();
  write_file_atomic(a.output, tok.to_json());
  const double secs_total = seconds_since(t0);

  const Compression train_c = measure_compression(tok, texts);
  std::optional<Compression> valid_c;
  if (!brown_dir) {
    try {
      brown_dir = find_brown_dir();
    } catch (const Error&) {  // optional for text / JSONL: report what we can
    }
  }
  if (brown_dir) valid_c = measure_compression(tok, texts_of(load_brown(*brown_dir, Split::Validation)));

  const size_t n_special = r.special_tokens.size();
  if (a.json) {
    nlohmann::json j = {{"output", a.output},
                        {"corpus", a.corpus},
                        {"input", input},
                        {"vocab_size", tok.vocab_size()},
                        {"bpe_tokens", r.tokens.size()},
                        {"merges", r.merges.size()},
                        {"special_tokens", r.special_tokens},
                        {"min_frequency", opt.min_frequency},
                        {"stop", bpe_stop_name(r.stop)},
                        {"documents", r.documents},
                        {"text_bytes", r.text_bytes},
                        {"words", r.words},
                        {"unique_words", r.unique_words},
                        {"skipped_pairs", r.skipped_pairs},
                        {"seconds_read", secs_read},
                        {"seconds_count", r.seconds_count},
                        {"seconds_merge", r.seconds_merge},
                        {"seconds", secs_total},
                        {"train", compression_json(train_c)}};
    if (split) j["split"] = split_name(*split);
    if (valid_c) j["brown_validation"] = compression_json(*valid_c);
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("corpus       %s, %s%s: %zu documents, %zu bytes\n", a.corpus.c_str(), input.c_str(),
              split ? (", split " + std::string(split_name(*split))).c_str() : "", r.documents, r.text_bytes);
  std::printf("words        %llu pre-tokens, %zu distinct\n", static_cast<unsigned long long>(r.words),
              r.unique_words);
  std::printf("vocab        %zu = 256 bytes + %zu merges + %zu special (stopped: %s)\n", tok.vocab_size(),
              r.merges.size(), n_special, std::string(bpe_stop_name(r.stop)).c_str());
  if (r.skipped_pairs)
    std::printf("skipped      %zu pairs whose concatenation was already a token\n", r.skipped_pairs);
  std::printf("time         %.2f s (read %.2f, count %.2f, merges %.2f)\n", secs_total, secs_read,
              r.seconds_count, r.seconds_merge);
  const auto show = [](const char* what, const Compression& c) {
    std::printf("%-12s %zu tokens for %zu words, %zu bytes: %.3f tokens/word, %.3f bytes/token\n", what,
                c.tokens, c.words, c.bytes, c.tokens_per_word(), c.bytes_per_token());
  };
  show("train", train_c);
  if (valid_c)
    show("brown valid", *valid_c);
  else
    std::printf("brown valid  (Brown corpus not found; skipped)\n");
  std::printf("output       %s\n", a.output.c_str());
}

void setup(CLI::App& app) {
  auto* tk = app.add_subcommand("tokenizer", "byte-level BPE tokenizers: train one on a corpus");
  tk->require_subcommand(1);

  auto a = std::make_shared<TrainArgs>();
  auto* train = tk->add_subcommand("train", "learn a byte-level BPE vocabulary and write tokenizer.json");
  train
      ->add_option("--corpus", a->corpus,
                   "brown | wikitext | text | jsonl | sotu | moby-dick | kjv, or a comma-separated list of "
                   "KIND[:SPLIT][=PATH] read together (e.g. brown:train,kjv; then no --split / --input)")
      ->capture_default_str();
  train->add_option("--input", a->input,
                    "file or directory (Brown, sotu, moby-dick: the npm package in node_modules/, kjv: "
                    "data/kjv/kjv.txt, found automatically)");
  auto* split = train
                    ->add_option("--split", a->split,
                                 "split of brown, sotu, moby-dick, kjv or a WikiText directory: train | "
                                 "validation | test | all")
                    ->check(CLI::IsMember({"train", "validation", "valid", "val", "test", "all"}))
                    ->capture_default_str();
  auto* field = train->add_option("--field", a->field, "JSONL field holding the text")->capture_default_str();
  train->add_flag("--per-line", a->per_line, "text corpus: one document per non-blank line");
  train->add_option("--vocab-size", a->vocab_size, "total vocabulary: 256 bytes + merges + special tokens")
      ->required();
  train->add_option("--min-frequency", a->min_frequency, "merge only pairs seen at least this often")
      ->capture_default_str();
  auto* special = train->add_option("--special", a->specials,
                                    "special tokens after the BPE vocabulary, the first is BOS (default: "
                                    "<|begin_of_text|> <|end_of_text|>)");
  train->add_flag("--no-special", a->no_special, "no special tokens (and no BOS template)");
  train->add_option("-o,--output", a->output, "tokenizer.json to write")->required();
  train->add_flag("--force", a->force, "replace an existing output file");
  train->add_flag("--json", a->json, "print the summary as JSON");
  train->callback([a, split, special, field] {
    run_train(*a, split->count() > 0, special->count() > 0, field->count() > 0);
  });
}

const Registrar reg("tokenizer", 15, setup);

}  // namespace
}  // namespace tl::cli
