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
  // Upper bounds far above any published model, so a corrupt or hostile config is refused here, naming the
  // key, before anything is sized from it (a 2^40 hidden_size would otherwise end in an anonymous
  // out-of-memory after minutes). RoPE tables and KV caches are sized from max_position_embeddings.
  auto at_most = [](const char* k, int64_t v, int64_t limit) {
    TL_CHECK(v <= limit, "config: {} = {} exceeds ternlab's limit of {}", k, v, limit);
  };
  at_most("hidden_size", hidden_size, kMaxHiddenSize);
  at_most("intermediate_size", intermediate_size, kMaxIntermediateSize);
  at_most("num_hidden_layers", num_hidden_layers, kMaxLayers);
  at_most("num_attention_heads", num_attention_heads, kMaxHeads);
  at_most("num_key_value_heads", num_key_value_heads, kMaxHeads);
  at_most("head_dim", head_dim, kMaxHeadDim);
  at_most("vocab_size", vocab_size, kMaxVocab);
  at_most("max_position_embeddings", max_position_embeddings, kMaxPositions);
  TL_CHECK(num_key_value_heads <= num_attention_heads,
           "config: num_key_value_heads ({}) exceeds num_attention_heads ({})", num_key_value_heads,
           num_attention_heads);
  // Each bound alone still allows a product no machine holds: bound the parameter count too.
  const double per_layer =
      2.0 * double(hidden_size) * double(head_dim) * double(num_attention_heads + num_key_value_heads) +
      3.0 * double(hidden_size) * double(intermediate_size);
  const double params =
      double(num_hidden_layers) * per_layer + 2.0 * double(vocab_size) * double(hidden_size);
  TL_CHECK(params <= double(kMaxParameters),
           "config: {:.3g} parameters (hidden_size {}, intermediate_size {}, {} layers, vocab {}) exceed "
           "ternlab's "
           "limit of {:.3g}",
           params, hidden_size, intermediate_size, num_hidden_layers, vocab_size, double(kMaxParameters));
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
