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

// Wall time of a session's decode calls by phase, summed over calls (seconds), and the weight bytes the
// ternary products and the LM head read: what `ternlab bench --profile` reports per token.
struct DecodeProfile {
  double total = 0;      // whole decode calls
  double ternary = 0;    // ternary matrix products (the kernel calls)
  double head = 0;       // the LM head
  double norm = 0;       // RMSNorms
  double quantize = 0;   // int8 activation quantization
  double attention = 0;  // RoPE, cache writes and attention over the cache
  double ternary_bytes = 0, head_bytes = 0;
  int64_t tokens = 0;  // tokens decoded
};

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
  // Adds the phase times of later decode calls into *profile (null: stops). Returns false, recording
  // nothing, where the backend has no phase timers (the fp32 reference).
  virtual bool set_profile(DecodeProfile* profile) {
    (void)profile;
    return false;
  }
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
