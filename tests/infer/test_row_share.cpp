// RowShare (infer/row_share.hpp), the one-token decode's division of a product's rows among a team.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "infer/row_share.hpp"

namespace tl {
namespace {

// Every row is run exactly once, by pieces inside [0, M) that are at least kMinClaimRows long unless they end
// a member's range, whatever the team size and however the members race.
TEST(RowShare, EveryRowExactlyOnceForAnyTeam) {
  RowShare share;
  share.reserve(4);
  for (int nt : {1, 2, 3, 4})
    for (int64_t M :
         {int64_t(0), int64_t(1), int64_t(15), int64_t(16), int64_t(17), int64_t(1000), int64_t(6912)}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(M));
      std::atomic<int> bad_pieces{0};
      share.reset(nt, M);
#pragma omp parallel num_threads(nt)
      {
        const int tid = omp_get_thread_num(), team = omp_get_num_threads();
        if (team == nt)  // (a runtime may give fewer threads; then the members left run the others' ranges)
          share.run(tid, nt, [&](int64_t m0, int64_t m1) {
            bool ends_a_range = false;
            for (int t = 1; t <= nt; ++t) ends_a_range |= m1 == RowShare::range_begin(t, nt, M);
            if (m0 < 0 || m1 > M || m0 >= m1 || (m1 - m0 < RowShare::kMinClaimRows && !ends_a_range))
              ++bad_pieces;
            for (int64_t i = m0; i < m1; ++i) ++hits[size_t(i)];
          });
        else if (tid == 0)
          for (int t = 0; t < nt; ++t)
            share.run(t, nt, [&](int64_t m0, int64_t m1) {
              for (int64_t i = m0; i < m1; ++i) ++hits[size_t(i)];
            });
      }
      EXPECT_EQ(bad_pieces.load(), 0) << "nt=" << nt << " M=" << M;
      for (int64_t i = 0; i < M; ++i)
        ASSERT_EQ(hits[size_t(i)].load(), 1) << "row " << i << " nt=" << nt << " M=" << M;
    }
}

// One member alone finishes every range, its own first (a descheduled member holds up nothing).
TEST(RowShare, OneMemberRunsTheWholeProduct) {
  RowShare share;
  share.reserve(3);
  share.reset(3, 300);
  std::vector<int64_t> starts;
  int64_t rows = 0;
  share.run(1, 3, [&](int64_t m0, int64_t m1) {
    starts.push_back(m0);
    rows += m1 - m0;
  });
  EXPECT_EQ(rows, 300);
  ASSERT_FALSE(starts.empty());
  EXPECT_EQ(starts.front(), RowShare::range_begin(1, 3, 300));  // its own range first
}

}  // namespace
}  // namespace tl
