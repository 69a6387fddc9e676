// The RPT study's Protocol A (rpt-spec §2.1): its raw-pruning notebook scored 8 hand-written sentences,
// each tokenized as tokenizer(text, truncation=True, max_length=128) — default special tokens, so BOS where
// the tokenizer's template adds one — and scored alone (the HF causal-LM loss over its n - 1 shifted
// targets), token-weighted over the 8. Its 9.39 -> 6.94 "−26.1% without fine-tuning" was measured this way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.hpp"

namespace tl::study {

// EVAL_TEXTS of the raw-pruning notebook, verbatim.
const std::vector<std::string>& protocol_a_sentences();
// TEST_PROMPTS of the notebooks (the study's generation prompts; the first five sentences' openings).
const std::vector<std::string>& study_test_prompts();
// Each sentence encoded with the default special tokens and cut to max_length tokens.
std::vector<std::vector<int32_t>> protocol_a_tokens(const Tokenizer& tok, int64_t max_length = 128);

}  // namespace tl::study
