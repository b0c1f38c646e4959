// defines: cpu_clock_seconds(), thread_cpu_seconds(), process_cpu_seconds()
// CPU time, as opposed to wall time: what ProfilingBackend, TimedCommunicator and StepProfile
// record beside the wall clock, so that on ranks sharing cores the work an op or a wait took is
// told apart from the time the rank was not scheduled.
#pragma once
#include <ctime>

namespace origami {

inline double cpu_clock_seconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
// The calling thread's CPU time.
inline double thread_cpu_seconds() { return cpu_clock_seconds(CLOCK_THREAD_CPUTIME_ID); }
// The whole process's (every thread's) CPU time.
inline double process_cpu_seconds() { return cpu_clock_seconds(CLOCK_PROCESS_CPUTIME_ID); }

}  // namespace origami
