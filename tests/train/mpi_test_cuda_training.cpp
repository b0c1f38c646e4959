// The CUDA backend end to end, against the CPU reference (each test GTEST_SKIPs without a GPU):
//  - one micro-batch of the whole model: loss terms and every parameter's gradient equal the
//    CPU backend's (GEMMs in exact fp32: ~1e-5 relative);
//  - 20 training steps at training.precision bf16 track the CPU loss curve (1e-2 relative);
//  - N ranks sharing one GPU (host-staged MPI, EP over the ranks) give the 1-rank GPU losses.
// Run under mpirun like the other training tests; the single-process tests run on rank 0 alone.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <random>

#include "backend/backend.h"
#include "base/logging.h"
#include "comm/communicator.h"
#include "comm/mpi_runtime.h"
#include "comm/nccl_communicator.h"
#include "model/moe_transformer.h"
#include "train/trainer.h"
#include "train_test_config.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_device.h"
#endif

namespace origami {
namespace {

#ifdef ORIGAMI_WITH_CUDA
bool have_gpu() { return cuda::device_count() > 0; }
#else
bool have_gpu() { return false; }
#endif

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(CudaTraining, StepZeroLossAndGradientsMatchCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
#ifdef ORIGAMI_WITH_CUDA
  auto world = make_mpi_world();
  if (world->rank() != 0) return;
  Config c = small_config("cuda-step0");
  c.model.hidden_size = 64;
  c.model.init_std = 0.1;
  c.moe.router.aux_loss_coeff = 0.01;
  c.moe.router.z_loss_coeff = 0.001;
  c.training.logits_chunk_tokens = 24;  // the LM head in chunks of 24, 24 and 16 rows
  const MicroBatchShape shape{2, 32};
  auto cpu = make_backend("cpu");
  cuda::CudaBackend gpu(0, cuda::GemmPrecision::fp32);
  MoeTransformer mc(*cpu, c, shape, 11), mg(gpu, c, shape, 11);
  std::mt19937 gen(5);
  std::vector<int32_t> tokens(64), targets(64);
  for (int i = 0; i < 64; ++i) tokens[i] = int32_t(gen() % 8192), targets[i] = int32_t(gen() % 8192);
  targets[9] = -1;
  const RouterLossScales s{float(c.moe.router.aux_loss_coeff), float(c.moe.router.z_loss_coeff)};
  for (auto* m : {&mc, &mg}) {
    Tensor g = m->params().all_grads();
    (m == &mc ? *cpu : static_cast<Backend&>(gpu)).fill(g.data(), 0.f, g.numel());
  }
  const ForwardStats fc = mc.forward(tokens.data(), targets.data(), s, 1.f / 63.f);
  const ForwardStats fg = mg.forward(tokens.data(), targets.data(), s, 1.f / 63.f);
  const RouterLosses rc = mc.router_losses(), rg = mg.router_losses();
  EXPECT_NEAR(fg.lm_loss_sum, fc.lm_loss_sum, 1e-5 * std::abs(fc.lm_loss_sum));
  EXPECT_NEAR(rg.balance, rc.balance, 1e-5 * std::abs(rc.balance));
  EXPECT_NEAR(rg.z, rc.z, 1e-5 * std::abs(rc.z));
  EXPECT_EQ(fg.expert_counts, fc.expert_counts);
  mc.backward();
  mg.backward();
  auto& pc = mc.params().all();
  auto& pg = mg.params().all();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    std::vector<float> a(size_t(pc[i].grad.numel())), b(a.size());
    cpu->copy_to_host(a.data(), pc[i].grad.data(), pc[i].grad.bytes());
    gpu.copy_to_host(b.data(), pg[i].grad.data(), pg[i].grad.bytes());
    EXPECT_LE(rel_diff(b, a), 1e-4) << pc[i].spec.name;
  }
#endif
}

TEST(CudaTraining, TwentyStepsTrackTheCpuLossCurve) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
  if (world->rank() == 0) {
    Config c = small_config("cuda-curve-cpu");
    c.training.train_steps = 20;
    const std::vector<double> ref = Trainer(c, *solo).train();
    c.training.backend = "cuda";
    c.training.precision = "bf16";
    c.logging.dir += "-gpu";
    const std::vector<double> got = Trainer(c, *solo).train();
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_NEAR(got[i], ref[i], 1e-2 * std::abs(ref[i])) << "step " << i + 1;
    EXPECT_LT(got.back(), got.front() - 0.2);  // and it trains
  }
  world->barrier();
}

TEST(CudaTraining, RanksSharingOneGpuMatchOneRank) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  if (world->size() == 1) GTEST_SKIP() << "needs several ranks";
  Config c = small_config("cuda-ranks" + std::to_string(world->size()));
  c.training.backend = "cuda";
  c.training.precision = "bf16";
  c.parallel.expert = std::min<int64_t>(world->size(), 4);
  const std::vector<double> parallel = Trainer(c, *world).train();
  auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
  if (world->rank() == 0) {
    Config one = c;
    one.parallel.expert = 1;
    one.logging.dir += "-ref";
    const std::vector<double> ref = Trainer(one, *solo).train();
    ASSERT_EQ(parallel.size(), ref.size());
    // bf16 GEMMs: different batch splits round differently, so 1e-3, not the fp32 1e-5.
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_NEAR(parallel[i], ref[i], 1e-3 * std::abs(ref[i])) << "step " << i + 1;
  }
  world->barrier();
}

// Tensor (sequence) and context parallelism on the GPU, ranks sharing it through the host-staged
// communicator: TP2 and CP2 on 2 ranks, TP2 x CP2 on 4, each against the 1-rank GPU run, in fp32
// (the vocabulary-parallel loss, the offset attention's padded default, the exchanges).
TEST(CudaTraining, TensorAndContextParallelOnOneGpuMatchOneRank) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  if (world->size() == 1) GTEST_SKIP() << "needs several ranks";
  struct Case {
    int tp, cp;
    const char* recompute;
  };
  const std::vector<Case> cases = world->size() == 2
                                      ? std::vector<Case>{{2, 1, "none"}, {1, 2, "full"}}
                                      : std::vector<Case>{{2, 2, "selective"}};
  for (const Case& k : cases) {
    if (k.tp * k.cp != world->size()) continue;
    SCOPED_TRACE(fmt::format("TP{} CP{} recompute {}", k.tp, k.cp, k.recompute));
    Config c = small_config(fmt::format("cuda-tp{}-cp{}", k.tp, k.cp));
    c.training.backend = "cuda";
    c.training.global_batch_size = 4;
    c.parallel.tensor = k.tp;
    c.parallel.context = k.cp;
    c.parallel.sequence_parallel = k.tp > 1;
    c.training.recompute = k.recompute;
    const std::vector<double> parallel = Trainer(c, *world).train();
    auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
    if (world->rank() == 0) {
      Config one = c;
      one.parallel.tensor = one.parallel.context = 1;
      one.parallel.sequence_parallel = false;
      one.training.recompute = "none";
      one.logging.dir += "-ref";
      const std::vector<double> ref = Trainer(one, *solo).train();
      ASSERT_EQ(parallel.size(), ref.size());
      for (size_t i = 0; i < ref.size(); ++i)
        EXPECT_NEAR(parallel[i], ref[i], 1e-4 * std::abs(ref[i])) << "step " << i + 1;
    }
    world->barrier();
  }
}

// The NCCL communicator on device buffers gives what MPI gives on the same host data, for every
// collective the model uses, with uneven blocks (exact: sums of small integers in fp32).
TEST(CudaTraining, NcclCollectivesMatchMpi) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!nccl_available()) GTEST_SKIP() << "no NCCL in this build";
#ifdef ORIGAMI_WITH_CUDA
  if (node_local_size() > cuda::device_count()) GTEST_SKIP() << "ranks share a GPU (NCCL refuses)";
  auto world = make_mpi_world();
  cuda::CudaBackend gpu(node_local_rank());
  NcclCommunicator nccl(world->split(0, world->rank(), "nccl"), gpu.device_stream());
  const int R = world->size(), r = world->rank();
  auto data = [&](int64_t n, int salt) {
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float((i * 7 + r * 13 + salt) % 17);
    return v;
  };
  auto dev = [&](const std::vector<float>& h) {
    float* p = static_cast<float*>(gpu.allocate(std::max<size_t>(h.size(), 1) * 4));
    gpu.copy_from_host(p, h.data(), h.size() * 4);
    return p;
  };
  auto host_of = [&](const float* p, size_t n) {
    std::vector<float> h(n);
    gpu.copy_to_host(h.data(), p, n * 4);
    return h;
  };
  {  // allreduce (in place), max too
    auto h = data(1000, 1);
    float* d = dev(h);
    world->allreduce(h.data(), h.data(), 1000, CommDType::f32, ReduceOp::sum);
    nccl.allreduce(d, d, 1000, CommDType::f32, ReduceOp::sum);
    EXPECT_EQ(host_of(d, 1000), h) << "allreduce";
  }
  std::vector<int64_t> counts(static_cast<size_t>(R)), displs(static_cast<size_t>(R));
  int64_t total = 0;
  for (int i = 0; i < R; ++i) counts[size_t(i)] = 3 + 5 * i, displs[size_t(i)] = total, total += counts[size_t(i)];
  {  // allgatherv: rank i contributes counts[i]
    auto mine = data(counts[size_t(r)], 2);
    std::vector<float> h(static_cast<size_t>(total));
    world->allgatherv(mine.data(), counts[size_t(r)], h.data(), counts, displs, CommDType::f32);
    float* s = dev(mine);
    float* d = dev(std::vector<float>(static_cast<size_t>(total), -1.f));
    nccl.allgatherv(s, counts[size_t(r)], d, counts, displs, CommDType::f32);
    EXPECT_EQ(host_of(d, size_t(total)), h) << "allgatherv";
  }
  {  // reduce_scatterv: block i reduced onto rank i
    auto all = data(total, 3);
    std::vector<float> h(static_cast<size_t>(counts[size_t(r)]));
    world->reduce_scatterv(all.data(), h.data(), counts, CommDType::f32, ReduceOp::sum);
    float* s = dev(all);
    float* d = dev(std::vector<float>(h.size(), -1.f));
    nccl.reduce_scatterv(s, d, counts, CommDType::f32, ReduceOp::sum);
    EXPECT_EQ(host_of(d, h.size()), h) << "reduce_scatterv";
  }
  {  // alltoallv: rank r sends (r + i + 1) elements to rank i
    std::vector<int64_t> sc(static_cast<size_t>(R)), sd(static_cast<size_t>(R)), rc(static_cast<size_t>(R)), rd(static_cast<size_t>(R));
    int64_t st = 0, rt = 0;
    for (int i = 0; i < R; ++i) {
      sc[size_t(i)] = r + i + 1, sd[size_t(i)] = st, st += sc[size_t(i)];
      rc[size_t(i)] = i + r + 1, rd[size_t(i)] = rt, rt += rc[size_t(i)];
    }
    auto sendh = data(st, 4);
    std::vector<float> h(static_cast<size_t>(rt));
    world->alltoallv(sendh.data(), sc, sd, h.data(), rc, rd, CommDType::f32);
    float* s = dev(sendh);
    float* d = dev(std::vector<float>(h.size(), -1.f));
    nccl.alltoallv(s, sc, sd, d, rc, rd, CommDType::f32);
    EXPECT_EQ(host_of(d, h.size()), h) << "alltoallv";
  }
  {  // host buffers pass through to MPI
    int64_t x = r + 1;
    nccl.allreduce(&x, &x, 1, CommDType::i64, ReduceOp::sum);
    EXPECT_EQ(x, int64_t(R) * (R + 1) / 2);
  }
  // And a training run whose data-parallel reductions go through NCCL gives the staged run's
  // losses (same reduction order on one rank per GPU).
  auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
  if (world->rank() == 0) {
    Config c = small_config("cuda-nccl");
    c.training.backend = "cuda";
    c.training.train_steps = 4;
    setenv("ORIGAMI_DEVICE_COMM", "nccl", 1);
    const std::vector<double> with_nccl = Trainer(c, *solo).train();
    setenv("ORIGAMI_DEVICE_COMM", "staged", 1);
    c.logging.dir += "-staged";
    const std::vector<double> staged = Trainer(c, *solo).train();
    unsetenv("ORIGAMI_DEVICE_COMM");
    EXPECT_EQ(with_nccl, staged);
  }
  world->barrier();
#endif
}

}  // namespace
}  // namespace origami
