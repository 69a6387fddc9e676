#include "infer/reference_model.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace tl {

class ReferenceSession : public DecodeSession {
 public:
  ReferenceSession(const ReferenceModel& owner, int64_t capacity)
      : owner_(owner), cache_(owner.cpu_->make_cache(capacity)), logits_(size_t(owner.config().vocab_size)) {}

  int64_t length() const override { return cache_.length; }
  int64_t capacity() const override { return cache_.capacity; }
  void truncate(int64_t n) override {
    TL_CHECK(n >= 0 && n <= cache_.length, "truncate: {} is outside 0..{}", n, cache_.length);
    cache_.length = n;  // positions >= n are overwritten by the next decode
  }
  std::span<const float> decode(std::span<const int32_t> tokens) override {
    TL_CHECK(!tokens.empty(), "decode: no tokens");
    std::lock_guard lock(owner_.mutex_);
    owner_.cpu_->forward_step(cache_, tokens, hidden_);  // hidden_ is (n,C)
    const int64_t C = owner_.config().hidden_size;
    owner_.cpu_->logits(hidden_.data() + hidden_.size() - size_t(C), 1, logits_.data());
    return logits_;
  }

 private:
  const ReferenceModel& owner_;
  KVCache cache_;
  std::vector<float> hidden_, logits_;
};

ReferenceModel::ReferenceModel(Model model) : model_(std::move(model)) {
  cpu_ = std::make_unique<CpuModel>(model_);
}

std::unique_ptr<DecodeSession> ReferenceModel::new_session(int64_t capacity) const {
  const int64_t max_pos = config().max_position_embeddings;
  TL_CHECK(capacity >= 0 && capacity <= max_pos, "session capacity {} is outside 1..{}", capacity, max_pos);
  return std::make_unique<ReferenceSession>(*this, capacity == 0 ? max_pos : capacity);
}

std::string ReferenceModel::describe() const {
  return fmt::format("reference fp32 forward, {} layers, hidden {}, vocab {}", config().num_hidden_layers,
                     config().hidden_size, config().vocab_size);
}

}  // namespace tl
