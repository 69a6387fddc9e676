// TeamBarrier: no member leaves a phase before all have arrived, what one wrote before arriving is seen by
// all after, and the sleeping path (a short spin, more threads than cores) neither loses a wake-up nor
// deadlocks.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cpu/team.hpp"

namespace tl {
namespace {

// kThreads threads pass kRounds phases; in each, every thread writes its slot, meets the others, checks
// every slot, and meets them again before the slots change.
void run_rounds(TeamBarrier& barrier, int threads, int rounds) {
  std::vector<int> slot(size_t(threads), -1);
  std::atomic<int> errors{0};
  std::vector<std::thread> team;
  for (int t = 0; t < threads; ++t)
    team.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        slot[size_t(t)] = r;
        barrier.arrive_and_wait(threads);
        for (int u = 0; u < threads; ++u)
          if (slot[size_t(u)] != r) errors.fetch_add(1);
        barrier.arrive_and_wait(threads);
      }
    });
  for (auto& th : team) th.join();
  EXPECT_EQ(errors.load(), 0);
}

TEST(TeamBarrier, EveryPhaseSeesEveryWrite) {
  TeamBarrier spinning;  // the default spin: waits are short, sleeping is rare
  run_rounds(spinning, 2, 20000);
  TeamBarrier sleeping(0.0);  // no spin: every waiter sleeps on the futex
  run_rounds(sleeping, 2, 2000);
  TeamBarrier crowded(1.0);  // more threads than this machine's cores: members are descheduled mid-spin
  run_rounds(crowded, 2 * int(std::max(1u, std::thread::hardware_concurrency())) + 1, 500);
}

TEST(TeamBarrier, OneThreadNeverWaits) {
  TeamBarrier b;
  for (int i = 0; i < 3; ++i) b.arrive_and_wait(1);
  b.arrive_and_wait(0);
}

}  // namespace
}  // namespace tl
