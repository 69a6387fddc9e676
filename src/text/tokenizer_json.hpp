// Sections of the tokenizer.json files ternlab writes (Tokenizer::byte_level, train_bpe), in HF
// `tokenizers`' format, so both writers spell them one way.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace tl {

// An "added_tokens" entry of a special token.
nlohmann::json added_token_json(int64_t id, const std::string& content);
// LLaMA-3's post-processor: BOS before each sequence (TemplateProcessing).
nlohmann::json bos_template_json(const std::string& bos, int64_t bos_id);
// The "model" section of a byte-level BPE (vocab: token -> id, merges: "a b" strings).
nlohmann::json bpe_model_json(nlohmann::json vocab, nlohmann::json merges, bool ignore_merges);

}  // namespace tl
