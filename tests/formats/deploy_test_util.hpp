// Helpers for the GGUF export/import tests: a small model whose dims suit every GGUF kind, and
// rewriting a GGUF image (metadata and tensors) to make contradictory files.
#pragma once
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../common/test_util.hpp"
#include "core/file.hpp"
#include "formats/gguf.hpp"
#include "model/model.hpp"

namespace tl::test {

namespace fs = std::filesystem;

// hidden 256, ffn 512, 2 layers, 4 heads / 2 kv heads of 64, vocab 300: rows are multiples of 256 (TQ).
inline BitNetConfig small_config() {
  BitNetConfig c = config_preset("tiny");
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 300;
  c.max_position_embeddings = 128;
  c.bos_token_id = 256;
  c.eos_token_id = 257;
  c.rope_theta = 500000.0;
  return c;
}

inline Model random_model(const BitNetConfig& c, uint64_t seed) {
  Model m = make_model(c);
  init_random(m, seed);
  // Norm gains other than 1, so a norm read back wrongly shows.
  uint64_t k = seed;
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Norm)
      for (float& x : m.tensor(v.name))
        x = 0.5f + float((k = k * 6364136223846793005ull + 1442695040888963407ull) >> 40) / float(1 << 24);
  return m;
}

inline std::vector<uint8_t> read_bytes(const fs::path& p) {
  const std::string s = read_file(p);
  return {s.begin(), s.end()};
}

// A GGUF image taken apart, to be edited and put back together.
struct GgufParts {
  GgufMetadata metadata;
  struct Tensor {
    GgufTensorSpec spec;
    std::vector<uint8_t> data;
  };
  std::vector<Tensor> tensors;

  explicit GgufParts(const GgufFile& f) : metadata(f.metadata()) {
    for (const auto& t : f.tensors()) {
      const auto b = f.bytes(t);
      tensors.push_back({{t.name, t.type, t.dims}, {b.begin(), b.end()}});
    }
  }
  GgufValue* find(const std::string& key) {
    for (auto& [k, v] : metadata)
      if (k == key) return &v;
    return nullptr;
  }
  void set(const std::string& key, GgufValue v) {
    if (GgufValue* p = find(key))
      *p = std::move(v);
    else
      metadata.emplace_back(key, std::move(v));
  }
  void erase(const std::string& key) {
    std::erase_if(metadata, [&](const auto& kv) { return kv.first == key; });
  }
  // Renames the architecture and every key under its prefix.
  void rename_arch(const std::string& from, const std::string& to) {
    for (auto& [k, v] : metadata) {
      if (k.rfind(from + ".", 0) == 0) k = to + k.substr(from.size());
      if (k == "general.architecture") v = to;
    }
  }
  Tensor* tensor(const std::string& name) {
    for (auto& t : tensors)
      if (t.spec.name == name) return &t;
    return nullptr;
  }
  void erase_tensor(const std::string& name) {
    std::erase_if(tensors, [&](const Tensor& t) { return t.spec.name == name; });
  }
  std::vector<uint8_t> bytes() const {
    std::vector<GgufTensorBlob> blobs;
    for (const auto& t : tensors) blobs.push_back({t.spec, t.data});
    return gguf_bytes(metadata, blobs);
  }
};

}  // namespace tl::test
