#include "model/config.hpp"

#include "core/error.hpp"

namespace tl {

void BitNetConfig::validate() const {
  auto pos = [](const char* k, int64_t v) { TL_CHECK(v > 0, "config: {} must be positive, found {}", k, v); };
  pos("hidden_size", hidden_size);
  pos("intermediate_size", intermediate_size);
  pos("num_hidden_layers", num_hidden_layers);
  pos("num_attention_heads", num_attention_heads);
  pos("num_key_value_heads", num_key_value_heads);
  pos("head_dim", head_dim);
  pos("vocab_size", vocab_size);
  pos("max_position_embeddings", max_position_embeddings);
  TL_CHECK(num_attention_heads % num_key_value_heads == 0,
           "config: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
           num_attention_heads, num_key_value_heads);
  TL_CHECK(head_dim % 2 == 0, "config: head_dim must be even for RoPE, found {}", head_dim);
  TL_CHECK(rope_theta > 0, "config: rope_theta must be positive, found {}", rope_theta);
  TL_CHECK(rms_norm_eps > 0 && rms_norm_eps < 1, "config: rms_norm_eps must be in (0, 1), found {}",
           rms_norm_eps);
  TL_CHECK(!attention_bias, "config: attention_bias=true is not supported by BitNet b1.58 (found true)");
  TL_CHECK(bos_token_id < vocab_size && eos_token_id < vocab_size,
           "config: bos/eos token ids ({}/{}) must be below vocab_size ({})", bos_token_id, eos_token_id,
           vocab_size);
}

BitNetConfig config_preset(const std::string& name) {
  BitNetConfig c;  // defaults are the 2B-4T values
  if (name == "2b4t") return c;
  if (name == "tiny") {
    c.hidden_size = 64;
    c.intermediate_size = 160;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 512;
    c.max_position_embeddings = 256;
    c.bos_token_id = 256;
    c.eos_token_id = 257;
    return c;
  }
  if (name == "small") {
    c.hidden_size = 256;
    c.intermediate_size = 688;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.vocab_size = 4096;
    c.max_position_embeddings = 1024;
    c.bos_token_id = 256;
    c.eos_token_id = 257;
    return c;
  }
  fail("unknown model preset '{}': expected one of tiny, small, 2b4t", name);
}

}  // namespace tl
