#include "infer/loader.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.hpp"
#include "core/file.hpp"
#include "infer/reference_model.hpp"
#include "io/checkpoint.hpp"

namespace tl {

namespace fs = std::filesystem;

namespace {

std::vector<int32_t> stop_ids_of(const Tokenizer& tok, const BitNetConfig& cfg) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && id < int64_t(tok.vocab_size()) && std::find(ids.begin(), ids.end(), id) == ids.end())
      ids.push_back(int32_t(id));
  };
  add(cfg.eos_token_id);
  add(tok.eos_id());
  if (auto eot = tok.find("<|eot_id|>")) add(*eot);
  return ids;
}

std::string chat_template_of(const fs::path& dir) {
  const fs::path cfg = dir / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::exists(cfg, ec)) return {};
  const auto j = nlohmann::json::parse(read_file(cfg), nullptr, /*allow_exceptions=*/false);
  TL_CHECK(!j.is_discarded(), "{}: not valid JSON", cfg.string());
  if (j.contains("chat_template") && j["chat_template"].is_string()) return j["chat_template"];
  return {};
}

}  // namespace

LoadedModel load_language_model(const fs::path& path, const LoadOptions& options) {
  TL_CHECK(options.backend == "auto" || options.backend == "engine" || options.backend == "reference",
           "unknown backend '{}': expected auto, engine or reference", options.backend);
  std::error_code ec;
  TL_CHECK(fs::is_directory(path, ec), "{}: not a checkpoint directory", path.string());
  const fs::path tok_path = options.tokenizer.empty() ? path / "tokenizer.json" : options.tokenizer;
  TL_CHECK(fs::exists(tok_path, ec), "{}: no tokenizer.json (pass --tokenizer)", path.string());
  Tokenizer tok = Tokenizer::from_file(tok_path);
  Model model = load_checkpoint(path);
  const BitNetConfig cfg = model.config;
  TL_CHECK(int64_t(tok.vocab_size()) <= cfg.vocab_size,
           "{}: the tokenizer has {} tokens, more than the model's vocab_size {}", path.string(),
           tok.vocab_size(), cfg.vocab_size);
  LoadedModel out{std::make_unique<ReferenceModel>(std::move(model)), tok, chat_template_of(path),
                  stop_ids_of(tok, cfg), path.filename().string()};
  if (out.name.empty()) out.name = path.parent_path().filename().string();
  return out;
}

}  // namespace tl
