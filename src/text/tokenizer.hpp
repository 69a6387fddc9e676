// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json, as LLaMA 3 (and so BitNet b1.58-2B-4T)
// uses it: added tokens matched first (longest first), regex pre-tokenizer (PCRE2), GPT-2 byte map, BPE
// with ignore_merges, and a TemplateProcessing post-processor that prepends <|begin_of_text|>.
//
// Everything HF would do differently (normalizers, other models, dropout, truncation, ...) is rejected
// when loading with a tl::Error that names the key and value, so an accepted file encodes exactly as HF.
// A Tokenizer is immutable once built; copies share state, and encode/decode may run on many threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl {

namespace fs = std::filesystem;

class Tokenizer {
 public:
  static Tokenizer from_file(const fs::path& path);
  // `what` names the source in error messages (usually the file path).
  static Tokenizer from_json(std::string_view json, std::string_view what = "tokenizer.json");
  // A LLaMA-3-style tokenizer with no merges for tiny test models: ids 0..255 are the bytes 0..255 (in
  // byte-unicode form), 256 <|begin_of_text|>, 257 <|end_of_text|>, then <|reserved_special_token_K|>
  // (K = 0, 1, ...) up to vocab_size - 1. vocab_size must be at least 258.
  static Tokenizer byte_level(int32_t vocab_size);

  // Throws tl::Error "invalid UTF-8 at byte N" for text that is not valid UTF-8. add_special applies the
  // post-processor template (for LLaMA 3: <|begin_of_text|> first).
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // The bytes the ids stand for, concatenated. Ids cut in the middle of a multi-byte character give
  // bytes that are not valid UTF-8 on their own (useful when streaming); no replacement is made.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The pieces BPE sees (raw bytes, before the byte map); added tokens found in the text are pieces of
  // their own. For tests and diagnostics.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  int32_t bos_id() const;  // first token of the template prefix, else <|begin_of_text|>; -1 if none
  int32_t eos_id() const;  // <|end_of_text|> (or <|endoftext|>, </s>); -1 if none
  size_t vocab_size() const;
  const std::string& token(int32_t id) const;      // as written in tokenizer.json ("Ġthe")
  std::string_view token_bytes(int32_t id) const;  // what decode() gives for this one id
  std::optional<int32_t> find(std::string_view token) const;
  bool is_special(int32_t id) const;
  const std::vector<std::pair<std::string, std::string>>& merges() const;
  // A complete tokenizer.json (loadable by HF tokenizers/transformers and by from_json).
  std::string to_json() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// The tokenizer.json a command reads, resolved in this one place: `override` (--tokenizer) when given (a
// directory holding tokenizer.json, or the file), else <checkpoint>/tokenizer.json. Errors name what is
// missing and what to pass.
fs::path resolve_tokenizer_path(const fs::path& checkpoint, const fs::path& override_path = {});

}  // namespace tl
