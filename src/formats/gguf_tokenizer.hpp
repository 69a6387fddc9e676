// Tokenizer <-> GGUF tokenizer metadata (reference §3.5) for byte-level BPE with the LLaMA-3 pre-tokenizer.
//
// Written keys: tokenizer.ggml.model = "gpt2"; tokenizer.ggml.pre = "llama-bpe" when the merges are ignored
// for whole-word tokens (LLaMA 3's ignore_merges), else "smaug-bpe" (llama.cpp's name for the same regex
// with merges always applied, which is how the tokenizers `ternlab tokenizer train` writes encode);
// tokens (byte-unicode strings as in tokenizer.json), token_type (1 normal, 3 control = special added
// token, 4 user-defined = other added token, 5 unused = padding), merges ("a b", rank order), bos/eos (and
// padding) token ids, add_bos_token / add_eos_token, and tokenizer.chat_template when not empty.
// A tokenizer with fewer tokens than the model's vocab_size is padded with "[PAD<id>]" tokens of type 5, so
// the GGUF vocabulary has exactly vocab_size entries (llama.cpp requires it to match token_embd).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include "formats/gguf.hpp"
#include "model/config.hpp"
#include "text/tokenizer.hpp"

namespace tl {

inline constexpr int32_t kTokenTypeNormal = 1, kTokenTypeUnknown = 2, kTokenTypeControl = 3,
                         kTokenTypeUserDefined = 4, kTokenTypeUnused = 5, kTokenTypeByte = 6;

struct GgufTokenizerMetadata {
  GgufMetadata kv;     // in the order llama.cpp's converters write them
  std::string pre;     // tokenizer.ggml.pre written
  size_t padding = 0;  // [PAD<id>] tokens added
};

// Errors (tl::Error naming what is wrong): a pre-tokenizer other than LLaMA-3's Split + ByteLevel, a
// post-processor that adds tokens other than BOS first / EOS last, more tokens than config.vocab_size, a
// padding name already taken, bos/eos ids disagreeing with the tokenizer's template.
GgufTokenizerMetadata gguf_tokenizer_metadata(const Tokenizer& tok, const BitNetConfig& config,
                                              std::string_view chat_template);

struct GgufTokenizer {
  Tokenizer tokenizer;
  std::string pre;           // as stored ("" when absent)
  std::string pre_used;      // the pre-tokenizer the rebuilt tokenizer follows
  size_t padding = 0;        // trailing "[PAD<id>]" tokens of type 5 left out of the tokenizer
  size_t vocab_entries = 0;  // tokenizer.ggml.tokens entries (padding included)
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;
  std::string chat_template;  // "" when absent
};

// Rebuilds the tokenizer from a GGUF's metadata as a tokenizer.json and Tokenizer::from_json.
// tokenizer.ggml.pre: llama-bpe / llama3 / llama-v3 -> the LLaMA-3 regex with ignore_merges; smaug-bpe /
// dbrx -> the same regex with merges always applied. Absent: `pre_override` if given, else for the
// bitnet.cpp architectures (bitnet-b1.58, bitnet-25; Microsoft's converter never writes it) LLaMA-3's,
// with a logged note; otherwise refused. Any other value is refused (ternlab implements no other regex).
// add_bos_token absent: true for the LLaMA-3 family, as llama.cpp does. Trailing type-5 tokens spelled
// "[PAD<id>]" (what export pads with) are left out, so an exported tokenizer comes back identical.
GgufTokenizer tokenizer_from_gguf(const GgufFile& f, std::string_view arch, std::string_view pre_override);

}  // namespace tl
