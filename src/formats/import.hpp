// GGUF -> BitNet model, tokenizer and chat template, for the files ternlab writes (formats/export.hpp) and
// for Microsoft's official bitnet-b1.58-2B-4T GGUF (arch bitnet-b1.58, I2_S linears, F16 token_embd, F32
// norms, no tokenizer.ggml.pre). Formats: ../shared/reference/bitnet-arch-and-formats.md §3, docs/gguf.md.
//
// Two levels:
//   GgufModelReader  opens and checks a file (metadata, tokenizer, every tensor's presence, type and dims)
//                    without decoding weights; then hands out one tensor at a time: ternary codes + alpha
//                    for a linear, fp32 for norms, the embedding as stored (f16 bits or fp32). This is what
//                    a fast engine builds from without an fp32 copy of a 2B-parameter model.
//   import_gguf      the whole model as a tl::Model: fp32 params where each ternary linear holds
//                    code * alpha and Model::fixed_scale[name] = alpha, so quantize_weight gives back exactly
//                    the file's codes and alpha (the same convention as load_checkpoint's packed layout).
//
// What a linear's codes and alpha are, by stored type (then times the mainline `.scale` tensor if present):
//   TQ2_0 / TQ1_0  code = stored trit - 1; alpha = the fp16 block d shared by every block that has a nonzero
//                  code (all-zero blocks may have any d); blocks with different d are refused ("not a per-
//                  tensor ternary weight"); a TQ2_0 2-bit value 3 is refused.
//   I2_S           code = stored - 1; alpha = the first float of the tail; a 2-bit value 3 is refused (the
//                  format never writes it; bitnet.cpp would read it as 0).
//   F32/F16/BF16   alpha = max |w|; every value must be exactly 0 or ±alpha, else refused.
// A linear whose codes are all zero keeps the stored alpha if it is positive and normal, else gets 1 (so a
// float linear that is all zero has alpha 1). A nonzero linear needs a positive, normal alpha.
//
// Refused with a message naming the key or tensor: an unknown arch; a `bitnet` file without
// bitnet.hidden_activation (mainline would silently run SiLU; reference §7) and a bitnet.cpp file whose
// hidden_activation says silu, unless ImportOptions::hidden_act decides; an unknown activation; missing
// required keys or tensors; unexpected tensors (output.weight or `.scale` where the arch's graph would not
// use them, rope_freqs, ...); dims that contradict the metadata; vocab_size vs token count vs token_embd
// rows; head_dim (= embedding_length / head_count) vs rope.dimension_count or attention.key_length; an
// I2_S (type 36) tensor in a non-bitnet.cpp arch; quantized embeddings or norms; NaN/Inf floats.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/huge_pages.hpp"
#include "formats/gguf.hpp"
#include "model/model.hpp"
#include "model/quant.hpp"
#include "text/tokenizer.hpp"

namespace tl {

struct ImportOptions {
  std::string hidden_act;     // "relu2" / "silu": supplies or overrides the file's FFN activation; "": none
  std::string tokenizer_pre;  // supplies or overrides tokenizer.ggml.pre (e.g. "llama-bpe"); "": none
};

// What was found in the file.
struct GgufFormat {
  std::string arch;                     // bitnet | bitnet-b1.58 | bitnet-25
  std::string engine;                   // "llama.cpp" for bitnet, "bitnet.cpp" for the others
  std::string name;                     // general.name ("" if absent)
  int64_t file_type = -1;               // general.file_type (-1 if absent)
  std::vector<GgmlType> linear_types;   // distinct types of the ternary linears, in order of appearance
  GgmlType embed_type = GgmlType::F32;  // token_embd.weight
  GgmlType norm_type = GgmlType::F32;   // of the first norm (all are float)
  bool lm_head = false;                 // output.weight present (untied)
  GgmlType lm_head_type = GgmlType::F32;
  bool scale_tensors = false;     // mainline `.scale` tensors present
  std::string activation;         // relu2 | silu
  std::string activation_source;  // "metadata", "implied by the arch", "override"
  std::string tokenizer_pre;      // as stored ("" when absent)
  std::string tokenizer_pre_used;
  size_t vocab_entries = 0, padding_tokens = 0;
  bool chat_template = false;
  std::vector<std::string> notes;  // defaults taken, overrides applied
  std::string describe() const;    // one paragraph for logs and `ternlab info`
};

// A (rows, cols) float matrix as stored: f16 bits for an F16 tensor (no conversion), else fp32.
struct GgufFloatTable {
  int64_t rows = 0, cols = 0;
  HugeVector<float> f32;  // huge pages: an LM head is streamed once per decoded token
  HugeVector<uint16_t> f16;
  bool is_f16() const { return !f16.empty(); }
};

class GgufModelReader {
 public:
  explicit GgufModelReader(const std::filesystem::path& path, const ImportOptions& options = {});
  // An image in memory (must outlive the reader); `what` names it in messages.
  GgufModelReader(std::span<const uint8_t> image, std::string_view what, const ImportOptions& options = {});
  ~GgufModelReader();
  GgufModelReader(GgufModelReader&&) noexcept;
  GgufModelReader& operator=(GgufModelReader&&) noexcept;

  const GgufFile& file() const;
  const BitNetConfig& config() const;  // quant_mode Offline: the scales are fixed by the file
  const GgufFormat& format() const;
  const Tokenizer& tokenizer() const;
  const std::string& chat_template() const;

  // The GGUF tensor of a HF name (gguf_tensor_name), checked present.
  const GgufTensorInfo& tensor(const std::string& hf_name) const;
  // Codes [out, in] and alpha of layer `layer`'s linear `which` (kLinearNames order), decoded and checked.
  TernaryWeight linear(int64_t layer, int which) const;
  // A float tensor (norm, embedding, lm_head) by HF name, as fp32.
  std::vector<float> read_float(const std::string& hf_name) const;
  // model.embed_tokens.weight or lm_head.weight as stored (f16 bits when F16).
  GgufFloatTable read_table(const std::string& hf_name) const;
  // Every tensor decoded into a Model (fp32; linears = code * alpha, fixed_scale = alpha).
  Model to_model() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
  void open(const ImportOptions& options);
};

struct GgufModel {
  BitNetConfig config;
  Model model;
  Tokenizer tokenizer;
  std::string chat_template;  // "" when the file has none
  GgufFormat format;
};

GgufModel import_gguf(const std::filesystem::path& path, const ImportOptions& options = {});
GgufModel import_gguf(std::span<const uint8_t> image, std::string_view what,
                      const ImportOptions& options = {});

}  // namespace tl
