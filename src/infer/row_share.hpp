// RowShare: the rows [0, M) of one product shared by a team of nt threads (the engine's one-token decode).
// Member t owns the range [range_begin(t), range_begin(t + 1)) (whose start it can prefetch before the
// product opens) and claims pieces of it from the front, each a quarter of what is left (at least
// kMinClaimRows rows); when its range is done it claims pieces of the others' ranges the same way.
// Shrinking pieces make the members finish together, and a member descheduled on a busy machine holds up
// only its current piece. Each row runs exactly once.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace tl {

class RowShare {
 public:
  static constexpr int64_t kMinClaimRows = 16;

  static int64_t range_begin(int t, int nt, int64_t M) { return M * t / nt; }

  // Room for a team of up to `members` threads; call outside the team's parallel region.
  void reserve(int members) {
    if (count_ >= members) return;
    count_ = members;
    cursors_ = std::make_unique<Cursor[]>(size_t(count_));
  }
  // Before a product, by one thread while the others wait at a barrier: each member's range of M rows.
  void reset(int nt, int64_t M) {
    for (int t = 0; t < nt; ++t) {
      cursors_[size_t(t)].next.store(range_begin(t, nt, M), std::memory_order_relaxed);
      cursors_[size_t(t)].end = range_begin(t + 1, nt, M);
    }
  }
  // Member tid of nt: f(begin, end) for every piece this member claims.
  template <class F>
  void run(int tid, int nt, F&& f) {
    for (int k = 0; k < nt; ++k) {
      Cursor& c = cursors_[size_t((tid + k) % nt)];
      int64_t begin = c.next.load(std::memory_order_relaxed);
      while (begin < c.end) {
        const int64_t size = std::max(kMinClaimRows, (c.end - begin) / 4);
        if (c.next.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) {
          f(begin, std::min(c.end, begin + size));
          begin = c.next.load(std::memory_order_relaxed);
        }
      }
    }
  }

 private:
  struct alignas(64) Cursor {  // a member's range: the next row to claim, the end
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::unique_ptr<Cursor[]> cursors_;
  int count_ = 0;
};

}  // namespace tl
