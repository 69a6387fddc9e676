// One entry point for every command that runs a model for text: a checkpoint directory or a GGUF file, on
// the fast engine or the fp32 reference, with its tokenizer, chat template and stop tokens.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "formats/open_model.hpp"  // is_gguf_file
#include "infer/session.hpp"
#include "text/tokenizer.hpp"

namespace tl {

struct LoadOptions {
  std::string backend = "auto";     // "engine" (fast kernels), "reference" (fp32 CpuModel) or "auto"
  std::filesystem::path tokenizer;  // a tokenizer.json overriding the model's own
  std::string hidden_act;           // overrides a GGUF's activation ("relu2" / "silu"); empty: none
  std::string head = "auto";        // engine LM head: auto (as stored), f32, f16 or i8 (see infer/engine.hpp)
};

struct LoadedModel {
  std::unique_ptr<LanguageModel> lm;
  Tokenizer tokenizer;
  std::string chat_template;      // Jinja text from tokenizer_config.json or the GGUF; empty if none
  std::vector<int32_t> stop_ids;  // end of generation: eos, and <|eot_id|> when the vocabulary has it
  std::string name;               // the file or directory name, for /v1/models and logs
};

// Errors: a path that is neither a checkpoint directory nor a GGUF file, a model without a tokenizer (and
// no override), anything the checkpoint or GGUF loaders refuse, an unknown backend.
LoadedModel load_language_model(const std::filesystem::path& path, const LoadOptions& options = {});

}  // namespace tl
