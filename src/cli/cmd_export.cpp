// ternlab export: a checkpoint directory -> one GGUF file for llama.cpp (tq2_0, tq1_0) or bitnet.cpp (i2_s,
// f16, f32), with the tokenizer and chat template embedded.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "formats/chat_template_default.hpp"
#include "formats/checkpoint.hpp"
#include "formats/export.hpp"

namespace tl::cli {
namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  fs::path checkpoint, out, tokenizer;
  std::string type, embed, name;
  bool force = false, json = false;
};

// tokenizer_config.json's chat_template (a string), or "" when the file or the key is absent.
std::string chat_template_in(const fs::path& dir) {
  const fs::path path = dir / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  const auto j = nlohmann::json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
  TL_CHECK(!j.is_discarded() && j.is_object(), "{}: not a JSON object", path.string());
  const auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return {};
  TL_CHECK(it->is_string(), "{}: chat_template must be a string (a list of named templates is not supported)",
           path.string());
  return it->get<std::string>();
}

void run_export(const ExportArgs& a) {
  // Flags first, so a typo fails before a 2B-parameter checkpoint is read.
  ExportOptions opt;
  opt.kind = parse_export_kind(a.type);
  if (!a.embed.empty()) {
    TL_CHECK(a.embed == "f16" || a.embed == "f32", "--embed must be f16 or f32, found '{}'", a.embed);
    opt.embed_type = a.embed == "f16" ? GgmlType::F16 : GgmlType::F32;
  }
  std::error_code ec;
  TL_CHECK(a.force || !fs::exists(a.out, ec), "{} exists; pass --force to replace it", a.out.string());
  TL_CHECK(fs::is_directory(a.checkpoint, ec), "{}: not a checkpoint directory", a.checkpoint.string());
  const fs::path tok_path = resolve_tokenizer_path(a.checkpoint, a.tokenizer);
  TL_CHECK(fs::exists(tok_path, ec), "{}: no tokenizer.json (pass --tokenizer)", a.checkpoint.string());
  opt.name = a.name;
  if (opt.name.empty()) opt.name = fs::weakly_canonical(a.checkpoint, ec).filename().string();
  if (opt.name.empty()) opt.name = "ternlab-bitnet";

  const Tokenizer tok = Tokenizer::from_file(tok_path);
  std::string chat_template = chat_template_in(tok_path.parent_path());
  const bool default_template = chat_template.empty();
  if (default_template) {
    chat_template = kBitNetChatTemplate;
    log_info("no chat_template in {}: embedding BitNet b1.58-2B-4T's",
             (tok_path.parent_path() / "tokenizer_config.json").string());
  }
  const Model model = load_checkpoint(a.checkpoint);
  const ExportReport r = export_gguf(model, tok, chat_template, opt, a.out);

  const double zero_pct = r.linear_weights ? 100.0 * double(r.zero_codes) / double(r.linear_weights) : 0.0;
  if (a.json) {
    const nlohmann::json j = {
        {"path", r.path.string()},
        {"type", export_kind_name(r.kind)},
        {"arch", r.arch},
        {"file_type", r.file_type},
        {"linear_type", ggml_type_name(r.linear_type)},
        {"embed_type", ggml_type_name(r.embed_type)},
        {"tensors", r.tensors},
        {"bytes", r.bytes},
        {"linear_weights", r.linear_weights},
        {"zero_codes", r.zero_codes},
        {"tokenizer_pre", r.tokenizer_pre},
        {"vocab_entries", r.vocab_entries},
        {"padding_tokens", r.padding_tokens},
        {"chat_template", default_template ? "default (BitNet b1.58-2B-4T)" : "tokenizer_config.json"}};
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("wrote {} ({:.2f} MB): {} for {} (arch {}, general.file_type {}), {} tensors\n", r.path.string(),
             double(r.bytes) / 1e6, export_kind_name(r.kind), r.arch == "bitnet" ? "llama.cpp" : "bitnet.cpp",
             r.arch, r.file_type, r.tensors);
  fmt::print("  linears {}: {} weights, {:.2f}% zero codes; token_embd {}\n", ggml_type_name(r.linear_type),
             r.linear_weights, zero_pct, ggml_type_name(r.embed_type));
  fmt::print("  tokenizer gpt2/{}: {} entries ({} padding); chat template {}\n", r.tokenizer_pre,
             r.vocab_entries, r.padding_tokens,
             default_template ? "BitNet b1.58-2B-4T's (default)" : "from tokenizer_config.json");
}

const Registrar reg("export", 64, [](CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd =
      app.add_subcommand("export",
                         "write a checkpoint as one GGUF file: tq2_0/tq1_0 for llama.cpp (arch bitnet), "
                         "i2_s/f16/f32 for bitnet.cpp (arch bitnet-b1.58)");
  cmd->add_option("checkpoint", a->checkpoint,
                  "checkpoint directory (config.json, model.safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("-o,--output", a->out, "GGUF file to write")->required();
  cmd->add_option("--type", a->type, "tq2_0 | tq1_0 | i2_s | f16 | f32")->required();
  cmd->add_option("--embed", a->embed,
                  "token_embd storage: f16 or f32 (default: f32 for --type f32, else f16)");
  cmd->add_option("--name", a->name, "general.name (default: the checkpoint directory's name)");
  cmd->add_option(
      "--tokenizer", a->tokenizer,
      "tokenizer.json to embed (default: the checkpoint's); its tokenizer_config.json gives the chat "
      "template");
  cmd->add_flag("--force", a->force, "replace an existing output file");
  cmd->add_flag("--json", a->json, "print the report as JSON");
  cmd->callback([a] { run_export(*a); });
});

}  // namespace
}  // namespace tl::cli
