#include "infer/loader.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "core/file.hpp"
#include "formats/checkpoint.hpp"
#include "formats/import.hpp"
#include "formats/open_model.hpp"
#include "infer/engine.hpp"
#include "infer/reference_model.hpp"

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

// The engine (default) or the reference over a Model; the engine keeps no reference to the Model.
std::unique_ptr<LanguageModel> make_backend(Model model, const LoadOptions& options) {
  if (options.backend == "reference") {
    TL_CHECK(options.head == "auto", "--head applies to the engine backend only");
    return std::make_unique<ReferenceModel>(std::move(model));
  }
  EngineOptions eo;
  eo.head = options.head;
  return std::make_unique<Engine>(engine_source(model), eo);
}

}  // namespace

LoadedModel load_language_model(const fs::path& path, const LoadOptions& options) {
  TL_CHECK(options.backend == "auto" || options.backend == "engine" || options.backend == "reference",
           "unknown backend '{}': expected auto, engine or reference", options.backend);
  if (is_gguf_file(path)) {
    ImportOptions io;
    io.hidden_act = options.hidden_act;
    GgufModelReader reader(path, io);
    Tokenizer tok = options.tokenizer.empty() ? reader.tokenizer() : Tokenizer::from_file(options.tokenizer);
    const BitNetConfig cfg = reader.config();
    TL_CHECK(int64_t(tok.vocab_size()) <= cfg.vocab_size,
             "{}: the tokenizer has {} tokens, more than the model's vocab_size {}", path.string(),
             tok.vocab_size(), cfg.vocab_size);
    std::unique_ptr<LanguageModel> lm;
    if (options.backend == "reference") {
      TL_CHECK(options.head == "auto", "--head applies to the engine backend only");
      lm = std::make_unique<ReferenceModel>(reader.to_model());
    } else {
      EngineOptions eo;
      eo.head = options.head;
      lm = std::make_unique<Engine>(engine_source(reader), eo);
    }
    return LoadedModel{std::move(lm), tok, reader.chat_template(), stop_ids_of(tok, cfg),
                       path.filename().string()};
  }
  // A checkpoint directory: through the front door, which finds its tokenizer and chat template.
  OpenOptions oo;
  oo.tokenizer = options.tokenizer;
  OpenedModel opened = open_model(path, oo);
  TL_CHECK(opened.tokenizer.has_value(), "{}: no tokenizer.json (pass --tokenizer)", path.string());
  Tokenizer tok = std::move(*opened.tokenizer);
  Model model = std::move(opened.model);
  const std::string chat_template = std::move(opened.chat_template);
  const BitNetConfig cfg = model.config;
  LoadedModel out{make_backend(std::move(model), options), tok, chat_template, stop_ids_of(tok, cfg),
                  path.filename().string()};
  if (out.name.empty()) out.name = path.parent_path().filename().string();
  return out;
}

}  // namespace tl
