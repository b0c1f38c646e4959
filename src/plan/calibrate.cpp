// Each measurement runs a fixed number of repetitions between two barriers; ProfilingBackend's
// per-op totals give the time. Sizes are small enough for a laptop and long enough (tens of
// milliseconds each) that the clock's resolution does not matter.
#include "plan/calibrate.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/profiling_backend.h"
#include "base/error.h"

namespace origami {
namespace {

constexpr double kSeconds = 0.4;  // wall time of each measurement, all ranks at once

// Mean over the world of a per-rank figure.
double world_mean(const Communicator& world, double x) {
  double sum = 0;
  world.allreduce(&x, &sum, 1, CommDType::f64, ReduceOp::sum);
  return sum / world.size();
}

// The op's total: wall time, or the calling thread's CPU time where ranks share cores (there a
// rank's wall time depends on what the others do; its CPU time is the work the op needs).
double op_ms(const ProfilingBackend& p, const std::string& op, bool cpu_time) {
  for (const OpTime& t : p.report())
    if (t.op == op) return cpu_time ? t.cpu_ms : t.ms;
  fail("calibration: ProfilingBackend recorded no '{}'", op);
}

// Runs `op` again and again for `seconds` of wall time after a barrier, so every rank measures
// while all the others run too (a fixed repetition count would let fast ranks finish early and
// hand their cores to the slow ones). Returns seconds per call, from ProfilingBackend's total
// (CPU seconds where ranks share cores: ClusterSpec's compute figures are then a rank's own work).
template <typename Op>
double seconds_per_call(const Communicator& world, ProfilingBackend& prof, bool cpu_time,
                        const std::string& name, double seconds, Op&& op) {
  op();  // warm-up
  world.barrier();
  prof.reset();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t calls = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
    op();
    ++calls;
  }
  world.barrier();
  return op_ms(prof, name, cpu_time) * 1e-3 / double(calls);
}


struct Buffers {
  Backend& be;
  std::vector<void*> owned;
  float* get(int64_t n) {
    void* p = be.allocate(size_t(n) * sizeof(float));
    owned.push_back(p);
    be.fill(static_cast<float*>(p), 0.01f, n);
    return static_cast<float*>(p);
  }
  ~Buffers() {
    for (void* p : owned) be.deallocate(p);
  }
};

double host_memory_gib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (in >> key >> kib)
    if (key == "MemTotal:") return kib / (1024.0 * 1024.0);
  return 0;
}

}  // namespace

ClusterSpec calibrate_cluster(const Communicator& world, const std::string& backend,
                              int ranks_per_node) {
  auto device = make_backend(backend, 0);
  ProfilingBackend prof(*device);
  const unsigned cores = std::thread::hardware_concurrency();
  const bool shared = backend == "cpu" && cores > 0 && int(cores) < ranks_per_node;
  Buffers buf{prof};
  ClusterSpec spec;
  ComputeSpec& c = spec.compute;

  // GEMMs [4s, s] x [s, s]: the skinny shapes of a micro-batch's rows against a weight.
  const std::vector<int64_t> sizes = {8, 16, 32, 64, 128, 256, 512};
  for (int64_t s : sizes) {
    const int64_t M = 4 * s;
    float *a = buf.get(M * s), *b = buf.get(s * s), *out = buf.get(M * s);
    const double flops = 2.0 * double(M) * double(s) * double(s);
    GemmDesc g{.m = M, .n = s, .k = s, .a = a, .lda = s, .b = b, .ldb = s, .c = out, .ldc = s};
    const double sec = seconds_per_call(world, prof, shared, "gemm", kSeconds, [&] { prof.gemm(g); });
    const double gflops = flops / sec / 1e9;
    c.gemm_table.emplace_back(flops, world_mean(world, gflops));
  }

  // The causal attention core of a [1, 256] sequence, 4 heads (2 kv) of 32, both directions.
  {
    const int64_t T = 256, nh = 4, nkv = 2, hd = 32;
    float *q = buf.get(T * nh * hd), *k = buf.get(T * nkv * hd), *v = buf.get(T * nkv * hd);
    float *o = buf.get(T * nh * hd), *lse = buf.get(T * nh), *dq = buf.get(T * nh * hd);
    float *dk = buf.get(T * nkv * hd), *dv = buf.get(T * nkv * hd);
    const double flops = 2.0 * double(T) * double(T) * double(nh) * double(hd);  // causal
    const double fwd = seconds_per_call(world, prof, shared, "attention_forward", kSeconds, [&] {
      prof.attention_forward(q, k, v, o, lse, 1, T, nh, nkv, hd);
    });
    const double bwd = seconds_per_call(world, prof, shared, "attention_backward", kSeconds, [&] {
      prof.attention_backward(o, q, k, v, o, lse, dq, dk, dv, 1, T, nh, nkv, hd);
    });
    c.attention_gflops = world_mean(world, flops / fwd / 1e9);
    c.attention_backward_gflops = world_mean(world, flops / bwd / 1e9);
  }

  // Cross-entropy over [256, 4096] logits, SwiGLU over [1024, 256], AdamW over 1 Mi parameters:
  // nanoseconds per element, forward and backward together.
  {
    const int64_t N = 256, V = 4096;
    float *logits = buf.get(N * V), *losses = buf.get(N), *lse = buf.get(N), *dl = buf.get(N * V);
    std::vector<int32_t> host(size_t(N), 1);
    auto* targets = static_cast<int32_t*>(prof.allocate(size_t(N) * sizeof(int32_t)));
    buf.owned.push_back(targets);
    prof.copy_from_host(targets, host.data(), size_t(N) * sizeof(int32_t));
    const double f = seconds_per_call(world, prof, shared, "cross_entropy_forward", kSeconds, [&] {
      prof.cross_entropy_forward(logits, targets, losses, lse, N, V);
    });
    const double b = seconds_per_call(world, prof, shared, "cross_entropy_backward", kSeconds, [&] {
      prof.cross_entropy_backward(logits, targets, lse, 1.f, dl, N, V);
    });
    c.cross_entropy_ns = world_mean(world, 1e9 * (f + b) / double(N * V));
  }
  {
    const int64_t rows = 1024, F = 256;
    float *h = buf.get(rows * 2 * F), *out = buf.get(rows * F), *dh = buf.get(rows * 2 * F);
    const double f = seconds_per_call(world, prof, shared, "swiglu_forward", kSeconds,
                                      [&] { prof.swiglu_forward(h, out, rows, F); });
    const double b = seconds_per_call(world, prof, shared, "swiglu_backward", kSeconds,
                                      [&] { prof.swiglu_backward(out, h, dh, rows, F); });
    c.swiglu_ns = world_mean(world, 1e9 * (f + b) / double(rows * F));
  }
  {
    const int64_t n = int64_t(1) << 20;
    float *p = buf.get(n), *g = buf.get(n), *m = buf.get(n), *v = buf.get(n);
    int64_t t = 1;
    const double sec = seconds_per_call(world, prof, shared, "adamw", kSeconds, [&] {
      prof.adamw(p, g, m, v, n, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, t++);
    });
    c.adamw_ns = world_mean(world, 1e9 * sec / double(n));
  }

  // Elementwise bandwidth: out = a + b over 4 Mi floats (three arrays of 16 MiB).
  {
    const int64_t n = int64_t(1) << 22;
    float *a = buf.get(n), *b = buf.get(n), *out = buf.get(n);
    const double sec =
        seconds_per_call(world, prof, shared, "add", kSeconds, [&] { prof.add(a, b, out, n); });
    const double gbps = 12.0 * double(n) / sec / 1e9;
    c.memory_gbps = world_mean(world, gbps);
  }

  // A tiny op's fixed cost.
  {
    float* x = buf.get(16);
    const double us =
        1e6 * seconds_per_call(world, prof, shared, "fill", kSeconds, [&] { prof.fill(x, 0.f, 1); });
    c.op_overhead_us = world_mean(world, us);
  }

  // Links: the world's all-gather, 1 KiB and 4 MiB per rank; ring model t = (g-1) lat +
  // (g-1)/g S / bw (S the gathered bytes). One node here, so both links get the same figures.
  const int g = world.size();
  auto allgather_s = [&](int64_t per_rank_floats, int reps) {
    std::vector<float> send(size_t(per_rank_floats), 1.f), recv(size_t(per_rank_floats * g));
    world.allgather(send.data(), recv.data(), per_rank_floats, CommDType::f32);
    world.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i)
      world.allgather(send.data(), recv.data(), per_rank_floats, CommDType::f32);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return world_mean(world, s / reps);
  };
  if (g > 1) {
    const double small = allgather_s(256, 200), large_floats = 1 << 20;
    const double large = allgather_s(int64_t(large_floats), 10);
    const double lat = small / (g - 1);
    const double bytes = 4.0 * large_floats * g;
    const double bw = double(g - 1) / g * bytes / std::max(large - small, 1e-9);
    spec.intra_node = spec.inter_node = LinkSpec{.bandwidth_gbps = bw / 1e9, .latency_us = lat * 1e6};
  } else {
    spec.intra_node = spec.inter_node = LinkSpec{.bandwidth_gbps = 1e3, .latency_us = 0};
  }

  // Collectives between compute, as training issues them: a GEMM (about 0.7 ms of work, a few
  // ms of wall time on a shared core, the grain of a small model's layer), then a tiny all-gather
  // over a group of 2, 4, ... ranks, the group cycling through the ways such groups tile the
  // world (stride 1, then size, size^2, ...: TP, then CP, then DP-like), as a layer's TP, CP and
  // EP exchanges do. What this costs beyond the GEMMs alone and the same all-gathers back to back
  // is the wait for each group's members to be scheduled, and the CPU the waiting ranks burn:
  // large when ranks share cores, near zero on a device per rank.
  if (g > 1) {
    const int64_t M = 512, K = 256;
    float *a = buf.get(M * K), *b = buf.get(K * K), *out = buf.get(M * K);
    GemmDesc gd{.m = M, .n = K, .k = K, .a = a, .lda = K, .b = b, .ldb = K, .c = out, .ldc = K};
    constexpr int kIterations = 120;
    std::vector<float> send(64, 1.f), recv(size_t(64 * g));
    auto timed = [&](const std::vector<std::unique_ptr<Communicator>>* groups, bool compute) {
      world.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kIterations; ++i) {
        if (compute) prof.gemm(gd);
        if (groups)
          (*groups)[size_t(i) % groups->size()]->allgather(send.data(), recv.data(), 64,
                                                            CommDType::f32);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      world.barrier();
      return world_mean(world, s / kIterations);
    };
    const double gemm_only = timed(nullptr, true);
    for (int size = 2; size <= g; size *= 2) {
      if (g % size) break;
      std::vector<std::unique_ptr<Communicator>> tilings;
      for (int stride = 1; int64_t(stride) * size <= g && g % (stride * size) == 0;
           stride *= size) {
        const int pos = (world.rank() / stride) % size;  // position in the group
        tilings.push_back(world.split(world.rank() - pos * stride, world.rank(), "calibrate"));
      }
      const double alone = timed(&tilings, false);
      const double between = timed(&tilings, true);
      c.collective_sync_us.emplace_back(size, std::max(0.0, 1e6 * (between - gemm_only - alone)));
    }
  }

  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  spec.name = fmt::format("{} ({} {} ranks)", host, g, backend);
  spec.source = fmt::format("origami-plan --calibrate on {}, {}, {} ranks on {} cores ({} "
                            "backend); every figure measured with all ranks running at once{}",
                            host, date, g, cores, backend,
                            shared ? "; compute figures in CPU time per rank" : "");
  spec.ranks_per_node = ranks_per_node;
  spec.device_memory_gib = host_memory_gib() / std::max(ranks_per_node, 1);
  if (spec.device_memory_gib <= 0) spec.device_memory_gib = 1;
  spec.bytes_per_element = 4;
  if (shared) c.shared_cores = int(cores);
  return spec;
}

}  // namespace origami
