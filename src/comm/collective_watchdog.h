// defines: CollectiveWatchdog (a thread that ends a job stuck in a collective), CollectiveGuard
// (marks one collective as in flight), watchdog_set_step(), watchdog_set_node_names()
// Open MPI 4.1 has no collective timeout: a rank whose peer is stopped, or whose peer's link
// drops silently, waits forever. Each MpiCommunicator call holds a CollectiveGuard; while a
// CollectiveWatchdog lives, a collective in flight longer than training.collective_timeout_s
// (from iteration 1 on: start-up is not watched) prints the rank, node, iteration, call, group
// and members, then exits this rank with kWatchdogExitCode, which makes mpirun end the job.
// The guards also add up the time spent in collectives from iteration 1 on; the watchdog's
// destructor logs that share (rank 0), which tools/scaling reads as "communication". The state
// is process-wide on purpose: one process has one thread of MPI calls and one watchdog.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace origami {

inline constexpr int kWatchdogExitCode = 75;  // EX_TEMPFAIL: the job may be restarted

class CollectiveWatchdog {
 public:
  // timeout_s <= 0: no watchdog (guards stay no-ops). Also installs SIGTERM/SIGINT handlers that
  // say what this rank was doing when the launcher ended the job.
  CollectiveWatchdog(double timeout_s, int world_rank);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;
};

// The iteration being run (1-based; 0 = start-up), reported with a hung collective. The first
// call with step >= 1 starts the clock of collective_seconds().
void watchdog_set_step(int64_t step);
// Hostname of each world rank (NodeMap::names[node_of[r]]), to name the nodes of a hung group.
void watchdog_set_node_names(std::vector<std::string> per_world_rank);
// Seconds this process spent inside collectives (waiting for peers included), and wall seconds,
// since the first iteration began.
double collective_seconds();
double training_seconds();

class CollectiveGuard {
 public:
  // `call` is a string literal; `group` and `members` (world ranks) outlive the guard.
  CollectiveGuard(const char* call, const std::string& group, const std::vector<int>& members);
  ~CollectiveGuard();
  CollectiveGuard(const CollectiveGuard&) = delete;
  CollectiveGuard& operator=(const CollectiveGuard&) = delete;

 private:
  bool outer_ = false;  // nested guards (a collective built from others) keep the outer record
};

}  // namespace origami
