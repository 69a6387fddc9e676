#include "formats/open_model.hpp"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "core/file.hpp"
#include "formats/checkpoint.hpp"

namespace tl {

namespace fs = std::filesystem;

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

namespace {

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

OpenedModel open_model(const fs::path& path, const OpenOptions& options) {
  OpenedModel out;
  std::error_code ec;
  if (is_gguf_file(path)) {
    ImportOptions io;
    io.hidden_act = options.hidden_act;
    GgufModel g = import_gguf(path, io);
    out.format = ModelFormat::Gguf;
    out.model = std::move(g.model);
    if (options.read_tokenizer)
      out.tokenizer =
          options.tokenizer.empty() ? std::move(g.tokenizer) : Tokenizer::from_file(options.tokenizer);
    out.chat_template = std::move(g.chat_template);
    out.gguf = std::move(g.format);
  } else {
    TL_CHECK(fs::exists(path, ec), "{}: no such file or directory", path.string());
    TL_CHECK(fs::is_directory(path, ec),
             "{}: neither a checkpoint directory nor a GGUF file (it does not start with the GGUF magic)",
             path.string());
    TL_CHECK(options.hidden_act.empty(), "{}: --hidden-act applies to GGUF files only", path.string());
    if (options.read_tokenizer) {  // first: the cheaper file fails sooner
      const fs::path tok = options.tokenizer.empty() ? path / "tokenizer.json" : options.tokenizer;
      if (!options.tokenizer.empty() || fs::exists(tok, ec)) out.tokenizer = Tokenizer::from_file(tok);
    }
    out.model = load_checkpoint(path);
    out.chat_template = chat_template_of(path);
  }
  if (out.tokenizer)
    TL_CHECK(int64_t(out.tokenizer->vocab_size()) <= out.model.config.vocab_size,
             "{}: the tokenizer has {} tokens, more than the model's vocab_size {}", path.string(),
             out.tokenizer->vocab_size(), out.model.config.vocab_size);
  return out;
}

}  // namespace tl
