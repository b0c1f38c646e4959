// defines: StepProfile
// logging.profile: where one logged step's time went on every rank. The trainer's backend runs
// inside a ProfilingBackend (each op timed, the device synchronised around it) and its process
// groups inside TimedCommunicators (each collective timed, waits included). After a logged step,
// one gather brings every rank's figures to rank 0, which appends a line to
// <logging.dir>/profile.jsonl:
//   {"iteration": 5, "ranks": [{"rank": 0, "step_ms": ..., "compute_ms": ..., "comm_ms": ...,
//     "compute_cpu_ms": ..., "comm_cpu_ms": ..., "cpu_ms": ...,
//     "ops": {"gemm": {"ms": .., "cpu_ms": .., "calls": ..}, ...},
//     "comm": {"tp": {"ms": .., "cpu_ms": .., "calls": ..}}}]}
// compute_ms is the sum of the ops (compute_cpu_ms their CPU time, see OpTime); comm_cpu_ms is
// the CPU time inside collectives (copies, and polling while waiting). step_ms - compute_ms -
// comm_ms is host work outside both (data, bookkeeping) and, on a shared CPU, time the rank was
// not scheduled between calls. cpu_ms is the CPU time the rank's process used in the step: on
// ranks that share cores, the sum over ranks against step_ms x cores says whether the cores were
// kept busy.
// Synchronising after every op removes overlap: this attributes time, it does not measure
// throughput (tools/plan/profile_vs_plan.py holds it against origami-plan's terms).
#pragma once
#include <fstream>
#include <memory>
#include <string>

#include "backend/profiling_backend.h"
#include "comm/timed_communicator.h"

namespace origami {

class StepProfile {
 public:
  // run_dir: rank 0's run directory ("" on the other ranks, which only send).
  StepProfile(ProfilingBackend& backend, std::shared_ptr<CommTimes> times,
              const Communicator& world, const std::string& run_dir);
  void begin_step();  // forgets everything timed so far, starts the CPU clock
  // Collective over `world`: gathers this step's figures; rank 0 writes them.
  void end_step(int64_t iteration, double step_seconds);

 private:
  ProfilingBackend& backend_;
  std::shared_ptr<CommTimes> times_;
  const Communicator& world_;
  std::ofstream jsonl_;
  double cpu_start_s_ = 0;
};

}  // namespace origami
