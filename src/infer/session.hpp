// The interface that generate, chat, serve and bench run on: a language model whose weights are shared and
// immutable, and decoding sessions (batch 1, with a KV cache) that hold all mutable state. Two backends
// implement it: the fp32 reference (CpuModel, cpu/forward.hpp) and the fast engine (infer/engine.hpp).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "model/config.hpp"

namespace tl {

class DecodeSession {
 public:
  virtual ~DecodeSession() = default;
  // Positions filled in the cache, and the most it can hold.
  virtual int64_t length() const = 0;
  virtual int64_t capacity() const = 0;
  // Keeps the first n positions (0 <= n <= length()); later decodes continue from there (prefix reuse).
  virtual void truncate(int64_t n) = 0;
  void clear() { truncate(0); }
  // Appends tokens at positions length().. and returns the logits (vocab_size) of the last one; the span
  // stays valid until the next call. Errors (session unchanged): no tokens, a token outside
  // [0, vocab_size), length() + tokens.size() > capacity().
  virtual std::span<const float> decode(std::span<const int32_t> tokens) = 0;
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;
  virtual const BitNetConfig& config() const = 0;
  // A new session; capacity <= config().max_position_embeddings (0: that maximum). Sessions may run on
  // different threads at once: the model is not modified by them.
  virtual std::unique_ptr<DecodeSession> new_session(int64_t capacity = 0) const = 0;
  // One line for logs and /v1/models: backend, kernel ISA, weight formats.
  virtual std::string describe() const = 0;
};

}  // namespace tl
