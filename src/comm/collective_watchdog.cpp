// CollectiveWatchdog: one polling thread per process reads what the guard in flight recorded
// (call, group, start time) through atomics; the signal handlers read the same record with
// async-signal-safe writes only.
#include "comm/collective_watchdog.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <algorithm>

#include <fmt/format.h>

#include "base/logging.h"

namespace origami {
namespace {

struct InFlight {
  std::atomic<int64_t> started_ns{0};  // steady clock; 0 = no collective in flight
  std::atomic<const char*> call{nullptr};
  std::atomic<const std::string*> group{nullptr};
  std::atomic<const std::vector<int>*> members{nullptr};
  std::atomic<int64_t> step{0};
  std::atomic<int64_t> busy_ns{0};      // time in collectives since training_start_ns
  std::atomic<int64_t> training_start_ns{0};
};
InFlight g_flight;
int g_rank = 0;
char g_host[256] = "?";
std::vector<std::string> g_node_names;  // set once at start-up, before training
std::mutex g_node_mutex;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The watchdog thread's state (one instance while a CollectiveWatchdog lives).
struct Thread {
  double timeout_s;
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  std::thread t;
};
Thread* g_thread = nullptr;

[[noreturn]] void report_and_exit(double waited, double timeout, int64_t step, const char* call,
                                  const std::string* group, const std::vector<int>* members) {
  std::string who;
  {
    std::lock_guard lock(g_node_mutex);
    if (members) {
      const size_t shown = std::min<size_t>(members->size(), 16);
      for (size_t i = 0; i < shown; ++i) {
        const int r = (*members)[i];
        who += fmt::format("{}{}", i ? ", " : "", r);
        if (size_t(r) < g_node_names.size()) who += fmt::format(" ({})", g_node_names[size_t(r)]);
      }
      if (shown < members->size()) who += fmt::format(" and {} more", members->size() - shown);
    }
  }
  const std::string where = step > 0 ? fmt::format("iteration {}", step) : "start-up";
  std::fprintf(stderr,
               "origami-train [rank %d on %s]: collective watchdog: %s on group '%s' has not "
               "completed after %.0f s (training.collective_timeout_s = %g) during %s; a member "
               "of the group is dead, stopped or cut off. Group members (world ranks): %s. "
               "Ending the job (exit %d).\n",
               g_rank, g_host, call ? call : "?", group ? group->c_str() : "?", waited, timeout,
               where.c_str(), who.empty() ? "?" : who.c_str(), kWatchdogExitCode);
  std::fflush(stderr);
  // _Exit, not MPI_Abort: MPI is not thread-safe here and this thread must not enter it.
  // mpirun sees a rank exit non-zero and ends every other rank of the job.
  std::_Exit(kWatchdogExitCode);
}

void watch(Thread* self) {
  const auto poll = std::chrono::duration<double>(std::min(1.0, self->timeout_s / 10));
  std::unique_lock lock(self->m);
  while (!self->cv.wait_for(lock, poll, [&] { return self->stop; })) {
    const int64_t start = g_flight.started_ns.load(std::memory_order_acquire);
    // Start-up is not watched: rank 0 may build data index caches for many minutes while the
    // others wait in a broadcast; a rank that dies then is still seen by mpirun.
    if (start == 0 || g_flight.step.load() < 1) continue;
    const double waited = double(now_ns() - start) * 1e-9;
    if (waited < self->timeout_s) continue;
    const char* call = g_flight.call.load();
    const std::string* group = g_flight.group.load();
    const std::vector<int>* members = g_flight.members.load();
    if (g_flight.started_ns.load(std::memory_order_acquire) != start) continue;  // just finished
    report_and_exit(waited, self->timeout_s, g_flight.step.load(), call, group, members);
  }
}

// Async-signal-safe: fixed buffer, write(2), no allocation.
struct SafeLine {
  char buf[512];
  size_t n = 0;
  void add(const char* s) {
    while (s && *s && n < sizeof(buf) - 1) buf[n++] = *s++;
  }
  void add(int64_t v) {
    char d[24];
    int k = 0;
    const bool neg = v < 0;
    uint64_t u = neg ? uint64_t(-v) : uint64_t(v);
    do d[k++] = char('0' + u % 10); while ((u /= 10) && k < 23);
    if (neg) d[k++] = '-';
    while (k > 0 && n < sizeof(buf) - 1) buf[n++] = d[--k];
  }
};

void on_signal(int sig) {
  SafeLine l;
  l.add("origami-train [rank ");
  l.add(int64_t(g_rank));
  l.add(" on ");
  l.add(g_host);
  l.add("]: ended by signal ");
  l.add(int64_t(sig));
  const int64_t step = g_flight.step.load();
  l.add(step > 0 ? " at iteration " : " during start-up");
  if (step > 0) l.add(step);
  const int64_t start = g_flight.started_ns.load();
  if (start != 0) {
    const std::string* group = g_flight.group.load();
    l.add(", waiting in ");
    l.add(g_flight.call.load());
    l.add(" on group '");
    l.add(group ? group->c_str() : "?");
    l.add("' for ");
    l.add((now_ns() - start) / 1000000);
    l.add(" ms");
  } else {
    l.add(", computing (not in a collective)");
  }
  l.add("\n");
  [[maybe_unused]] auto w = write(STDERR_FILENO, l.buf, l.n);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

CollectiveWatchdog::CollectiveWatchdog(double timeout_s, int world_rank) {
  g_rank = world_rank;
  gethostname(g_host, sizeof(g_host) - 1);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  if (timeout_s <= 0) return;
  g_thread = new Thread{.timeout_s = timeout_s};
  g_thread->t = std::thread(watch, g_thread);
}

CollectiveWatchdog::~CollectiveWatchdog() {
  if (g_rank == 0 && training_seconds() > 0)
    spdlog::info("time in collectives on this rank: {:.2f} s of {:.2f} s of training ({:.1f}%, "
                 "waiting for peers included)",
                 collective_seconds(), training_seconds(),
                 100.0 * collective_seconds() / training_seconds());
  if (!g_thread) return;
  {
    std::lock_guard lock(g_thread->m);
    g_thread->stop = true;
  }
  g_thread->cv.notify_all();
  g_thread->t.join();
  delete g_thread;
  g_thread = nullptr;
}

void watchdog_set_step(int64_t step) {
  if (step >= 1 && g_flight.training_start_ns.load() == 0) {
    g_flight.busy_ns.store(0);
    g_flight.training_start_ns.store(now_ns());
  }
  g_flight.step.store(step);
}

double collective_seconds() { return double(g_flight.busy_ns.load()) * 1e-9; }

double training_seconds() {
  const int64_t start = g_flight.training_start_ns.load();
  return start == 0 ? 0.0 : double(now_ns() - start) * 1e-9;
}

void watchdog_set_node_names(std::vector<std::string> per_world_rank) {
  std::lock_guard lock(g_node_mutex);
  g_node_names = std::move(per_world_rank);
}

CollectiveGuard::CollectiveGuard(const char* call, const std::string& group,
                                 const std::vector<int>& members) {
  if (g_flight.started_ns.load(std::memory_order_relaxed) != 0) return;  // nested
  outer_ = true;
  g_flight.call.store(call);
  g_flight.group.store(&group);
  g_flight.members.store(&members);
  g_flight.started_ns.store(now_ns(), std::memory_order_release);
}

CollectiveGuard::~CollectiveGuard() {
  if (!outer_) return;
  const int64_t start = g_flight.started_ns.load(std::memory_order_relaxed);
  g_flight.busy_ns.fetch_add(now_ns() - start, std::memory_order_relaxed);
  g_flight.started_ns.store(0, std::memory_order_release);
}

}  // namespace origami
