#include "formats/hf_config.hpp"

#include <cmath>
#include <limits>
#include <optional>

#include "core/error.hpp"
#include "formats/json_strict.hpp"

namespace tl {

namespace {

// Typed access to one JSON object; every error names the source and the key. null counts as absent.
class Fields {
 public:
  Fields(const ordered_json& j, std::string what, std::string prefix = "")
      : j_(j), what_(std::move(what)), prefix_(std::move(prefix)) {}

  bool has(const char* k) const { return j_.contains(k) && !j_[k].is_null(); }
  const ordered_json& at(const char* k) const { return j_[k]; }
  std::string key(const char* k) const { return prefix_ + k; }

  int64_t integer(const char* k) const {
    TL_CHECK(has(k), "{}: missing required key '{}'", what_, key(k));
    return as_int(j_[k], key(k));
  }
  int64_t integer(const char* k, int64_t def) const { return has(k) ? as_int(j_[k], key(k)) : def; }
  double number(const char* k, double def) const {
    if (!has(k)) return def;
    const auto& v = j_[k];
    TL_CHECK(v.is_number(), "{}: key '{}' must be a number, found {} {}", what_, key(k), json_kind(v),
             v.dump());
    return v.get<double>();
  }
  bool boolean(const char* k, bool def) const {
    if (!has(k)) return def;
    const auto& v = j_[k];
    TL_CHECK(v.is_boolean(), "{}: key '{}' must be true or false, found {} {}", what_, key(k), json_kind(v),
             v.dump());
    return v.get<bool>();
  }
  std::string string(const char* k, std::string def) const {
    if (!has(k)) return def;
    const auto& v = j_[k];
    TL_CHECK(v.is_string(), "{}: key '{}' must be a string, found {} {}", what_, key(k), json_kind(v),
             v.dump());
    return v.get<std::string>();
  }
  int64_t as_int(const ordered_json& v, const std::string& k) const {
    TL_CHECK(v.is_number_integer(), "{}: key '{}' must be an integer, found {} {}", what_, k, json_kind(v),
             v.dump());
    if (v.is_number_unsigned())
      TL_CHECK(v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
               "{}: key '{}' = {} is too large", what_, k, v.dump());
    return v.get<int64_t>();
  }
  const std::string& what() const { return what_; }

 private:
  const ordered_json& j_;
  std::string what_, prefix_;
};

std::string_view dtype_string_or_fail(const std::string& s, std::string_view what, std::string_view key) {
  for (std::string_view ok : {"bfloat16", "float16", "float32"})
    if (s == ok) return ok;
  fail("{}: key '{}' = '{}' is not supported (expected bfloat16, float16 or float32)", what, key, s);
}

// Each reader takes one group of keys of config.json into c; `what` names the file in every error.

void read_model_type(const Fields& f, const std::string& what, BitNetConfig& c) {
  const std::string model_type = f.string("model_type", "bitnet");
  TL_CHECK(model_type == "bitnet", "{}: model_type must be 'bitnet', found '{}'", what, model_type);
  c.model_type = model_type;
  if (f.has("architectures")) {
    const auto& a = f.at("architectures");
    TL_CHECK(a.is_array() && a.size() == 1 && a[0].is_string(),
             "{}: key 'architectures' must be a list of one class name, found {}", what, a.dump());
    const auto name = a[0].get<std::string>();
    // "BitnetForCausalLM" is the spelling of older community checkpoints (reference pitfall 1).
    TL_CHECK(name == "BitNetForCausalLM" || name == "BitnetForCausalLM",
             "{}: architectures ['{}'] is not supported (expected BitNetForCausalLM)", what, name);
    c.architecture = name;
  }
}

void read_shapes(const Fields& f, const std::string& what, BitNetConfig& c) {
  c.hidden_size = f.integer("hidden_size");
  c.intermediate_size = f.integer("intermediate_size");
  c.num_hidden_layers = f.integer("num_hidden_layers");
  c.num_attention_heads = f.integer("num_attention_heads");
  c.vocab_size = f.integer("vocab_size");
  c.num_key_value_heads =
      f.integer("num_key_value_heads", c.num_attention_heads);  // transformers: None -> heads
  c.max_position_embeddings = f.integer("max_position_embeddings", 2048);
  // validate() bounds every size; hidden_size is used before it, to derive head_dim.
  TL_CHECK(c.hidden_size <= kMaxHiddenSize, "{}: config: hidden_size = {} exceeds ternlab's limit of {}",
           what, c.hidden_size, kMaxHiddenSize);
  if (f.has("head_dim")) {
    c.head_dim = f.integer("head_dim");
  } else {
    TL_CHECK(c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0,
             "{}: no head_dim and hidden_size {} is not a multiple of num_attention_heads {}", what,
             c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
}

void read_scalars(const Fields& f, BitNetConfig& c) {
  c.rms_norm_eps = f.number("rms_norm_eps", 1e-5);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.attention_bias = f.boolean("attention_bias", false);
  c.attention_dropout = f.number("attention_dropout", 0.0);
  c.initializer_range = f.number("initializer_range", 0.02);
}

void read_activation(const ordered_json& j, const Fields& f, const std::string& what, BitNetConfig& c) {
  // transformers' BitNetConfig defaults hidden_act to relu2 only when the key is absent; null is no
  // activation at all (ACT2FN[None] fails), so it is refused rather than read as the default.
  TL_CHECK(!(j.contains("hidden_act") && j["hidden_act"].is_null()),
           "{}: hidden_act is null (expected \"relu2\" for BitNet b1.58, or \"silu\")", what);
  const std::string act = f.string("hidden_act", "relu2");
  if (act == "relu2") {
    c.hidden_act = Activation::Relu2;
  } else if (act == "silu") {
    c.hidden_act = Activation::Silu;
  } else {
    fail("{}: hidden_act '{}' is not supported (expected relu2 for BitNet b1.58, or silu)", what, act);
  }
}

void read_rope(const Fields& f, const std::string& what, BitNetConfig& c) {
  // RoPE: transformers 5 writes rope_parameters; Microsoft's files and transformers 4 write rope_theta.
  std::optional<double> theta;
  if (f.has("rope_theta")) theta = f.number("rope_theta", 0);
  if (f.has("rope_parameters")) {
    const auto& rp = f.at("rope_parameters");
    TL_CHECK(rp.is_object(), "{}: key 'rope_parameters' must be an object, found {}", what, json_kind(rp));
    const Fields r(rp, what, "rope_parameters.");
    const std::string type = r.string("rope_type", "default");
    TL_CHECK(type == "default", "{}: rope_parameters.rope_type '{}' is not supported (only default RoPE)",
             what, type);
    for (const auto& [k, _] : rp.items())
      TL_CHECK(k == "rope_type" || k == "rope_theta",
               "{}: rope_parameters.{} is not supported with default RoPE", what, k);
    if (r.has("rope_theta")) {
      const double t = r.number("rope_theta", 0);
      TL_CHECK(!theta || *theta == t, "{}: rope_theta {} and rope_parameters.rope_theta {} disagree", what,
               *theta, t);
      theta = t;
    }
  }
  c.rope_theta = theta.value_or(500000.0);
  if (f.has("rope_scaling")) {
    const auto& rs = f.at("rope_scaling");
    TL_CHECK(rs.is_object(), "{}: key 'rope_scaling' must be an object or null, found {}", what,
             json_kind(rs));
    const Fields r(rs, what, "rope_scaling.");
    const std::string type = r.has("rope_type") ? r.string("rope_type", "") : r.string("type", "");
    TL_CHECK(type == "default", "{}: rope_scaling {} is not supported (only default RoPE)", what, rs.dump());
  }
}

void read_token_ids(const Fields& f, const std::string& what, BitNetConfig& c) {
  c.bos_token_id = f.integer("bos_token_id", 128000);
  if (f.has("eos_token_id") && f.at("eos_token_id").is_array()) {
    const auto& e = f.at("eos_token_id");
    TL_CHECK(!e.empty(), "{}: key 'eos_token_id' is an empty list", what);
    for (const auto& v : e) f.as_int(v, "eos_token_id[]");
    c.eos_token_id = f.as_int(e[0], "eos_token_id[0]");
  } else {
    c.eos_token_id = f.integer("eos_token_id", 128001);
  }
  c.pad_token_id = f.integer("pad_token_id", -1);
  TL_CHECK(c.bos_token_id >= 0 && c.eos_token_id >= 0 && c.pad_token_id >= -1,
           "{}: token ids must be non-negative (bos {}, eos {}, pad {})", what, c.bos_token_id,
           c.eos_token_id, c.pad_token_id);
}

void read_dtype(const Fields& f, const std::string& what, BitNetConfig& c) {
  // transformers 5 writes "dtype"; older files "torch_dtype".
  std::string dtype;
  if (f.has("dtype")) dtype = std::string(dtype_string_or_fail(f.string("dtype", ""), what, "dtype"));
  if (f.has("torch_dtype")) {
    const std::string td(dtype_string_or_fail(f.string("torch_dtype", ""), what, "torch_dtype"));
    TL_CHECK(dtype.empty() || dtype == td, "{}: dtype '{}' and torch_dtype '{}' disagree", what, dtype, td);
    dtype = td;
  }
  c.torch_dtype = dtype.empty() ? "float32" : dtype;  // transformers' default dtype
}

void read_quantization_config(const Fields& f, const std::string& what, BitNetConfig& c) {
  c.has_quantization_config = f.has("quantization_config");
  if (c.has_quantization_config) {
    const auto& q = f.at("quantization_config");
    TL_CHECK(q.is_object(), "{}: key 'quantization_config' must be an object, found {}", what, json_kind(q));
    const Fields qf(q, what, "quantization_config.");
    const std::string method = qf.string("quant_method", "");
    TL_CHECK(method == "bitnet", "{}: quantization_config.quant_method must be 'bitnet', found '{}'", what,
             method);
    const std::string lc = qf.string("linear_class", "bitlinear");  // transformers' defaults
    if (lc == "autobitlinear") {
      c.linear_class = LinearClass::AutoBitLinear;
    } else if (lc == "bitlinear") {
      c.linear_class = LinearClass::BitLinear;
    } else {
      fail("{}: quantization_config.linear_class '{}' is not supported (expected autobitlinear or bitlinear)",
           what, lc);
    }
    const std::string mode = qf.string("quantization_mode", "offline");
    if (mode == "online") {
      c.quant_mode = QuantMode::Online;
    } else if (mode == "offline") {
      c.quant_mode = QuantMode::Offline;
    } else {
      fail("{}: quantization_config.quantization_mode '{}' is not supported (expected online or offline)",
           what, mode);
    }
    TL_CHECK(
        !qf.boolean("use_rms_norm", false),
        "{}: quantization_config.use_rms_norm = true (an extra norm before every BitLinear) is not supported",
        what);
    if (qf.has("modules_to_not_convert")) {
      const auto& m = qf.at("modules_to_not_convert");
      TL_CHECK(m.is_array(), "{}: quantization_config.modules_to_not_convert must be a list, found {}", what,
               json_kind(m));
      for (const auto& e : m)
        TL_CHECK(
            e.is_string() && e.get<std::string>() == "lm_head",
            "{}: quantization_config.modules_to_not_convert entry {} is not supported (only lm_head stays "
            "unquantized)",
            what, e.dump());
    }
  } else {
    c.quant_mode = QuantMode::Online;
    c.linear_class = LinearClass::AutoBitLinear;
  }
}

}  // namespace

BitNetConfig parse_hf_config(std::string_view json, std::string_view what_sv) {
  const std::string what(what_sv);
  const ordered_json j = parse_json_object(json, what);
  const Fields f(j, what);
  BitNetConfig c;
  read_model_type(f, what, c);
  read_shapes(f, what, c);
  read_scalars(f, c);
  read_activation(j, f, what, c);
  read_rope(f, what, c);
  read_token_ids(f, what, c);
  read_dtype(f, what, c);
  read_quantization_config(f, what, c);
  for (double v : {c.rope_theta, c.rms_norm_eps, c.attention_dropout, c.initializer_range})
    TL_CHECK(std::isfinite(v), "{}: numeric fields must be finite", what);
  try {
    c.validate();
  } catch (const Error& e) {
    fail("{}: {}", what, e.what());
  }
  return c;
}

BitNetConfig read_hf_config(const fs::path& path) {
  return parse_hf_config(read_file(path), path.string());
}

std::string hf_config_to_json(const BitNetConfig& c) {
  c.validate();
  ordered_json j;
  j["architectures"] = {"BitNetForCausalLM"};  // the class transformers registers, whatever spelling was read
  j["model_type"] = "bitnet";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = c.hidden_act == Activation::Relu2 ? "relu2" : "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};
  j["attention_bias"] = c.attention_bias;
  j["attention_dropout"] = c.attention_dropout;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["pad_token_id"] = c.pad_token_id >= 0 ? ordered_json(c.pad_token_id) : ordered_json(nullptr);
  j["torch_dtype"] = c.torch_dtype;
  j["dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  if (c.has_quantization_config) {
    j["quantization_config"] = {
        {"quant_method", "bitnet"},
        {"linear_class", c.linear_class == LinearClass::AutoBitLinear ? "autobitlinear" : "bitlinear"},
        {"quantization_mode", c.quant_mode == QuantMode::Online ? "online" : "offline"},
        {"use_rms_norm", false},
        {"modules_to_not_convert", nullptr}};
  }
  return j.dump(2) + "\n";
}

}  // namespace tl
