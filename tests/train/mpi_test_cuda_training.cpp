// The CUDA backend end to end, against the CPU reference (each test GTEST_SKIPs without a GPU):
//  - one micro-batch of the whole model: loss terms and every parameter's gradient equal the
//    CPU backend's (GEMMs in exact fp32: ~1e-5 relative);
//  - 20 training steps at training.precision bf16 track the CPU loss curve (1e-2 relative);
//  - N ranks sharing one GPU (host-staged MPI, EP over the ranks) give the 1-rank GPU losses.
// Run under mpirun like the other training tests; the single-process tests run on rank 0 alone.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/backend.h"
#include "base/logging.h"
#include "comm/communicator.h"
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
  const ForwardStats fc = mc.forward(tokens.data(), targets.data(), s);
  const ForwardStats fg = mg.forward(tokens.data(), targets.data(), s);
  EXPECT_NEAR(fg.lm_loss_sum, fc.lm_loss_sum, 1e-5 * std::abs(fc.lm_loss_sum));
  EXPECT_NEAR(fg.balance_loss, fc.balance_loss, 1e-5 * std::abs(fc.balance_loss));
  EXPECT_NEAR(fg.z_loss, fc.z_loss, 1e-5 * std::abs(fc.z_loss));
  EXPECT_EQ(fg.expert_counts, fc.expert_counts);
  mc.backward(1.f / 63.f);
  mg.backward(1.f / 63.f);
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

}  // namespace
}  // namespace origami
