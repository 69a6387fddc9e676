// The fp32 reference forward (cpu/forward.hpp) behind the LanguageModel interface: slow and exact, the
// yardstick the fast engine is checked against, and a backend for models the engine cannot take.
#pragma once
#include <memory>
#include <mutex>

#include "cpu/forward.hpp"
#include "infer/session.hpp"
#include "model/model.hpp"

namespace tl {

class ReferenceModel : public LanguageModel {
 public:
  // Takes the Model (the CpuModel reads its norms and embedding).
  explicit ReferenceModel(Model model);
  const BitNetConfig& config() const override { return model_.config; }
  std::unique_ptr<DecodeSession> new_session(int64_t capacity = 0) const override;
  std::string describe() const override;

 private:
  friend class ReferenceSession;
  Model model_;
  // CpuModel keeps activation buffers: one forward at a time, so sessions take this lock per decode.
  mutable std::mutex mutex_;
  mutable std::unique_ptr<CpuModel> cpu_;
};

}  // namespace tl
