// Model -> GGUF v3 for llama.cpp (mainline, arch `bitnet`) and bitnet.cpp (arch `bitnet-b1.58`); formats in
// ../shared/reference/bitnet-arch-and-formats.md §3 and docs/gguf.md ("Export").
//
// The ternary codes and scale of every linear come from the one quantizer (quantize_weight, honouring
// Model::fixed_scale): the file holds exactly the codes and alpha the evaluated model used.
//
//   kind    arch          linears                                  embedding    norms  ftype
//   tq2_0   bitnet        TQ2_0, block d = 1, F32 `.scale` {1} = α  f16 or f32   F32    37
//   tq1_0   bitnet        TQ1_0, block d = 1, F32 `.scale` {1} = α  f16 or f32   F32    36
//   i2_s    bitnet-b1.58  I2_S (2-bit codes + f32 α tail)          f16 or f32   F32    40
//   f16     bitnet-b1.58  α·T as F16 (α rounded to f16)            f16 or f32   F32    1
//   f32     bitnet-b1.58  α·T as F32                               f16 or f32   F32    0
//
// Refused, before any file is created: an untied lm_head for tq kinds (mainline's graph has no
// output.weight), a SiLU model for bitnet-b1.58 kinds (that arch runs ReLU²), TQ rows (in_features) not a
// multiple of 256, I2_S rows not a multiple of 128, head_dim · heads != hidden_size, an alpha that is not
// positive, finite and normal (or overflows f16 for the f16 kind), and everything gguf_tokenizer_metadata
// refuses.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "formats/gguf.hpp"
#include "model/model.hpp"
#include "text/tokenizer.hpp"

namespace tl {

enum class ExportKind { TQ2_0, TQ1_0, I2_S, F16, F32 };

// "tq2_0", "tq1_0", "i2_s", "f16", "f32"; tl::Error listing them for anything else.
ExportKind parse_export_kind(std::string_view name);
const char* export_kind_name(ExportKind kind);

struct ExportOptions {
  ExportKind kind = ExportKind::I2_S;
  // token_embd (and output.weight) storage: F16 or F32. Unset: F32 for the f32 kind, else F16.
  std::optional<GgmlType> embed_type;
  std::string name = "ternlab-bitnet";  // general.name
};

struct ExportReport {
  std::filesystem::path path;
  ExportKind kind = ExportKind::I2_S;
  std::string arch;
  GgmlType linear_type = GgmlType::I2_S, embed_type = GgmlType::F16;
  uint32_t file_type = 0;  // general.file_type
  size_t tensors = 0;
  uint64_t bytes = 0;
  uint64_t linear_weights = 0, zero_codes = 0;
  std::string tokenizer_pre;
  size_t vocab_entries = 0, padding_tokens = 0;
  bool chat_template = false;
};

// Writes `out` atomically (a temporary name, renamed at the end): a failure leaves no file and any existing
// one untouched. chat_template may be empty (then no tokenizer.chat_template key).
ExportReport export_gguf(const Model& model, const Tokenizer& tok, const std::string& chat_template,
                         const ExportOptions& options, const std::filesystem::path& out);

// The general.file_type ("ftype") value written for a kind (llama.cpp's llama_ftype; I2_S is bitnet.cpp's).
uint32_t export_file_type(ExportKind kind);

}  // namespace tl
