#include "workflow/init.hpp"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "formats/chat_template_default.hpp"
#include "model/model.hpp"
#include "text/tokenizer.hpp"

namespace tl {

namespace fs = std::filesystem;

namespace {
fs::path find_upwards(fs::path start, const fs::path& rel) {
  std::error_code ec;
  for (fs::path p = start; !p.empty(); p = p.parent_path()) {
    if (fs::exists(p / rel, ec)) return p / rel;
    if (p == p.parent_path()) break;
  }
  return {};
}
}  // namespace

fs::path find_llama3_tokenizer() {
  if (const char* env = std::getenv("TERNLAB_LLAMA3_TOKENIZER"); env && *env) return env;
  const fs::path rel = fs::path("data") / "llama3" / "tokenizer.json";
  if (auto p = find_upwards(fs::current_path(), rel); !p.empty()) return p;
  std::error_code ec;
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    if (auto p = find_upwards(exe.parent_path(), rel); !p.empty()) return p;
  return {};
}

InitResult init_checkpoint(const fs::path& dir, const InitOptions& opt) {
  BitNetConfig c = config_preset(opt.preset);
  if (opt.hidden_size) c.hidden_size = *opt.hidden_size;
  if (opt.intermediate_size) c.intermediate_size = *opt.intermediate_size;
  if (opt.num_layers) c.num_hidden_layers = *opt.num_layers;
  if (opt.num_heads) c.num_attention_heads = *opt.num_heads;
  if (opt.num_kv_heads) c.num_key_value_heads = *opt.num_kv_heads;
  if (opt.head_dim) {
    c.head_dim = *opt.head_dim;
  } else if (opt.hidden_size || opt.num_heads) {
    TL_CHECK(c.hidden_size % c.num_attention_heads == 0,
             "init: hidden size {} is not a multiple of {} heads (give --head-dim)", c.hidden_size,
             c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (opt.vocab_size) c.vocab_size = *opt.vocab_size;
  if (opt.max_positions) c.max_position_embeddings = *opt.max_positions;
  if (opt.rope_theta) c.rope_theta = *opt.rope_theta;
  if (opt.tie_word_embeddings) c.tie_word_embeddings = *opt.tie_word_embeddings;
  if (opt.hidden_act) {
    if (*opt.hidden_act == "relu2") {
      c.hidden_act = Activation::Relu2;
    } else if (*opt.hidden_act == "silu") {
      c.hidden_act = Activation::Silu;
    } else {
      fail("init: unknown activation '{}': expected relu2 or silu", *opt.hidden_act);
    }
  }
  TL_CHECK(opt.dtype == DType::BF16 || opt.dtype == DType::F32, "init: dtype must be bf16 or f32, found {}",
           dtype_name(opt.dtype));
  c.quant_mode = opt.layout == CheckpointLayout::Packed ? QuantMode::Offline : QuantMode::Online;
  c.torch_dtype = opt.dtype == DType::BF16 ? "bfloat16" : "float32";

  // The tokenizer decides BOS/EOS; load it first so a bad one fails before any file is written.
  InitResult res;
  fs::path tok_path = opt.tokenizer;
  if (tok_path.empty() && c.vocab_size == 128256) {
    tok_path = find_llama3_tokenizer();
    TL_CHECK(!tok_path.empty(),
             "init: a 128256-token vocabulary needs the LLaMA-3 tokenizer: run scripts/install-deps.sh (it "
             "builds data/llama3/tokenizer.json) or pass --tokenizer PATH");
  }
  const Tokenizer tok =
      tok_path.empty() ? Tokenizer::byte_level(int32_t(c.vocab_size)) : Tokenizer::from_file(tok_path);
  res.tokenizer_source = tok_path.empty() ? "byte-level (generated)" : tok_path.string();
  TL_CHECK(tok.vocab_size() <= size_t(c.vocab_size),
           "init: tokenizer {} has {} tokens, more than the model's vocab_size {}", res.tokenizer_source,
           tok.vocab_size(), c.vocab_size);
  if (tok.bos_id() >= 0) c.bos_token_id = tok.bos_id();
  if (tok.eos_id() >= 0) c.eos_token_id = tok.eos_id();
  c.validate();

  std::error_code ec;
  if (fs::exists(dir / "config.json", ec) && !opt.force)
    fail("init: {} already holds a checkpoint (config.json); pass --force to replace it", dir.string());
  fs::create_directories(dir, ec);
  TL_CHECK(!ec, "init: cannot create {}: {}", dir.string(), ec.message());

  Model m = make_model(c);
  init_random(m, opt.seed);
  SaveOptions so;
  so.layout = opt.layout;
  so.dtype = opt.dtype;
  so.max_shard_bytes = opt.max_shard_bytes;
  save_checkpoint(m, dir, so);
  write_file_atomic(dir / "tokenizer.json", tok_path.empty() ? tok.to_json() : read_file(tok_path));
  // Lets transformers' AutoTokenizer load the directory (PreTrainedTokenizerFast over tokenizer.json).
  nlohmann::json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                       {"bos_token", std::string(tok.token_bytes(int32_t(c.bos_token_id)))},
                       {"eos_token", std::string(tok.token_bytes(int32_t(c.eos_token_id)))},
                       {"model_max_length", c.max_position_embeddings},
                       {"clean_up_tokenization_spaces", false},
                       {"chat_template", std::string(kBitNetChatTemplate)}};
  write_file_atomic(dir / "tokenizer_config.json", tc.dump(2) + "\n");
  res.config = c;
  res.params = m.num_params();
  return res;
}

void copy_tokenizer_files(const fs::path& from_dir, const fs::path& to_dir) {
  std::error_code ec;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (fs::exists(from_dir / f, ec)) write_file_atomic(to_dir / f, read_file(from_dir / f));
}

}  // namespace tl
