// `ternlab criticality` and the study's C4: the analysis texts of a corpus as token sequences, and the
// measurement with its null models on the CPU reference or the GPU (analysis/criticality.hpp).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/criticality.hpp"
#include "text/tokenizer.hpp"
#include "workflow/device.hpp"

namespace tl {

// The study's analysis texts (rpt-spec §1.5) of a corpus (analysis_rows + select_analysis_texts), each
// encoded as the study's tokenizer(text, truncation=True, max_length) does: default special tokens (BOS
// when the tokenizer's template adds one), cut to max_tokens. Errors: no row longer than 100 characters.
std::vector<std::vector<int32_t>> analysis_token_texts(const Tokenizer& tok, const std::string& corpus,
                                                       const std::filesystem::path& input,
                                                       const std::string& split, int texts, int chars,
                                                       int64_t max_tokens);

// run_criticality_with_controls on `device`: the CPU reference, or the GPU's block-at-a-time runner. As
// there, the controls are made in place: `model` holds the last control's weights afterwards.
CriticalityReport run_criticality_on(Model& model, const std::vector<std::vector<int32_t>>& texts,
                                     const CriticalityOptions& opt, const std::vector<std::string>& controls,
                                     uint64_t control_seed, Device device);

}  // namespace tl
