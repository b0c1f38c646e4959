// The collective watchdog without MPI: a guard held past the timeout ends the process with
// kWatchdogExitCode and a message naming the call, the group, its members and the iteration;
// guards within the timeout, and a disabled watchdog, leave the process alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "comm/collective_watchdog.h"

namespace origami {
namespace {

const std::string kGroup = "ep";
const std::vector<int> kMembers = {0, 2, 4};

void hang_in_collective(double timeout_s, double hold_s) {
  CollectiveWatchdog watchdog(timeout_s, /*world_rank=*/3);
  watchdog_set_node_names({"node-a", "node-a", "node-b", "node-b", "node-c"});
  watchdog_set_step(7);
  CollectiveGuard guard("MPI_Alltoallv", kGroup, kMembers);
  std::this_thread::sleep_for(std::chrono::duration<double>(hold_s));
}

TEST(CollectiveWatchdogDeathTest, EndsAStuckCollectiveNamingCallGroupAndIteration) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(hang_in_collective(0.3, 10.0), testing::ExitedWithCode(kWatchdogExitCode),
              "rank 3 on .*: collective watchdog: MPI_Alltoallv on group 'ep' has not completed "
              "after 0 s \\(training.collective_timeout_s = 0.3\\) during iteration 7.*members "
              "\\(world ranks\\): 0 \\(node-a\\), 2 \\(node-b\\), 4 \\(node-c\\)");
}

TEST(CollectiveWatchdog, CollectivesWithinTheTimeoutAndDisabledWatchdogsPass) {
  hang_in_collective(2.0, 0.3);  // done before the timeout
  hang_in_collective(0.0, 0.5);  // 0 = no watchdog
  SUCCEED();
}

TEST(CollectiveWatchdog, AddsUpTimeInCollectivesFromTheFirstIteration) {
  CollectiveWatchdog watchdog(0, 0);
  watchdog_set_step(1);
  const double before = collective_seconds();
  {
    CollectiveGuard guard("MPI_Allreduce", kGroup, kMembers);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double spent = collective_seconds() - before;
  EXPECT_GE(spent, 0.19);
  EXPECT_LT(spent, 1.0);  // generous: a loaded CI box may sleep longer, never 5x longer
  EXPECT_GE(training_seconds(), spent);
}

}  // namespace
}  // namespace origami
