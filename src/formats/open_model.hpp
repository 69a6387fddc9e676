// The front door for reading a model: a checkpoint directory (one safetensors file or shards) or a GGUF file,
// told apart by the file's magic, with the tokenizer and chat template that come with it. Every input check
// of the loaders behind it applies (formats/checkpoint, formats/import).
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "formats/import.hpp"
#include "model/model.hpp"
#include "text/tokenizer.hpp"

namespace tl {

enum class ModelFormat { Checkpoint, Gguf };

struct OpenOptions {
  std::string hidden_act;           // GGUF only: supplies or overrides the file's activation (relu2 / silu)
  std::filesystem::path tokenizer;  // a tokenizer.json overriding the model's own
  bool read_tokenizer = true;       // false: leave `tokenizer` empty (callers that never encode text)
};

struct OpenedModel {
  ModelFormat format = ModelFormat::Checkpoint;
  Model model;  // fp32; from a GGUF: code × alpha with the file's scales fixed
  // The override, the GGUF's own, or <dir>/tokenizer.json; empty when a checkpoint directory has none.
  std::optional<Tokenizer> tokenizer;
  std::string chat_template;       // "" when none
  std::optional<GgufFormat> gguf;  // what a GGUF file held (its arch, types, activation source)
};

// True when path is a regular file starting with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

// Errors: a path that is neither a directory nor a GGUF file; anything the checkpoint or GGUF loaders refuse;
// --hidden-act for a checkpoint directory; a tokenizer larger than the model's vocabulary.
OpenedModel open_model(const std::filesystem::path& path, const OpenOptions& options = {});

}  // namespace tl
