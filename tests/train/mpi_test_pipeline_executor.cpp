// PipelineExecutor over real MPI ranks with a toy stage (y = tanh(w * x) per virtual stage, loss
// sum(y * t) on the last): every schedule kind and shape runs to the end (no hang), and every
// stage's weight gradient equals, bit for bit, a one-process run of all stages micro-batch by
// micro-batch, because every stage backpropagates its micro-batches in ascending order. Also over
// the PP group of a PP2 x DP2 layout, each data-parallel replica with its own data.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "backend/backend.h"
#include "base/error.h"
#include "comm/communicator.h"
#include "comm/parallel_layout.h"
#include "train/pipeline_executor.h"

namespace origami {
namespace {

constexpr int64_t kWidth = 6;  // boundary elements (a micro-batch's hidden state)

float weight(int stage, int64_t i) { return 0.4f + 0.1f * float(stage) - 0.05f * float(i); }
float input(int replica, int mb, int64_t i) { return std::sin(float(1 + i + 7 * mb + 31 * replica)); }
float target(int replica, int mb, int64_t i) { return std::cos(float(2 + 3 * i + mb + 5 * replica)); }

// One virtual stage's forward and backward on host vectors (CPU backend memory is host memory).
void stage_forward(int s, const float* x, float* y) {
  for (int64_t i = 0; i < kWidth; ++i) y[i] = std::tanh(weight(s, i) * x[i]);
}
void stage_backward(int s, const float* x, const float* y, const float* dy, float* dx, float* dw) {
  for (int64_t i = 0; i < kWidth; ++i) {
    const float g = dy[i] * (1.f - y[i] * y[i]);
    dw[i] += g * x[i];
    if (dx) dx[i] = g * weight(s, i);
  }
}

// The 1-process reference: all S stages for each micro-batch, micro-batches in order.
std::vector<std::vector<float>> reference_grads(int S, int m, int replica) {
  std::vector<std::vector<float>> dw(size_t(S), std::vector<float>(kWidth, 0.f));
  for (int mb = 0; mb < m; ++mb) {
    std::vector<std::vector<float>> act(size_t(S + 1), std::vector<float>(kWidth));
    for (int64_t i = 0; i < kWidth; ++i) act[0][size_t(i)] = input(replica, mb, i);
    for (int s = 0; s < S; ++s) stage_forward(s, act[size_t(s)].data(), act[size_t(s + 1)].data());
    std::vector<float> dy(kWidth), dx(kWidth);
    for (int64_t i = 0; i < kWidth; ++i) dy[size_t(i)] = target(replica, mb, i);
    for (int s = S - 1; s >= 0; --s) {
      stage_backward(s, act[size_t(s)].data(), act[size_t(s + 1)].data(), dy.data(), dx.data(),
                     dw[size_t(s)].data());
      dy = dx;
    }
  }
  return dw;
}

// Runs one step of `shape` on the pipeline group and checks this rank's stages' gradients.
void expect_pipeline_matches(const Communicator& pp, const ScheduleShape& shape, int replica) {
  auto be = make_backend("cpu");
  PipelineExecutor exec(*be, pp, shape, kWidth);
  const int S = num_virtual_stages(shape), last = S - 1;
  std::map<std::pair<int, int>, std::vector<float>> x0, y;  // per (micro-batch, chunk)
  std::vector<std::vector<float>> dw(size_t(shape.v), std::vector<float>(kWidth, 0.f));
  StageWork work;
  work.forward = [&](int mb, int c, const float* in, float* out, bool) {
    const int s = virtual_stage(shape, pp.rank(), c);
    std::vector<float> x(kWidth);
    for (int64_t i = 0; i < kWidth; ++i) x[size_t(i)] = in ? in[i] : input(replica, mb, i);
    ASSERT_EQ(in == nullptr, s == 0) << "an input exactly where a stage precedes";
    ASSERT_EQ(out == nullptr, s == last) << "an output exactly where a stage follows";
    auto& yy = y[{mb, c}];
    yy.resize(kWidth);
    stage_forward(s, x.data(), yy.data());
    if (out) std::copy(yy.begin(), yy.end(), out);
    x0[{mb, c}] = x;
  };
  work.backward = [&](int mb, int c, const float* in, const float* og, float* ig) {
    const int s = virtual_stage(shape, pp.rank(), c);
    ASSERT_EQ(og == nullptr, s == last);
    ASSERT_EQ(ig == nullptr, s == 0);
    const auto& x = x0.at({mb, c});
    if (in) EXPECT_EQ(std::vector<float>(in, in + kWidth), x) << "backward sees forward's input";
    std::vector<float> dy(kWidth);
    for (int64_t i = 0; i < kWidth; ++i) dy[size_t(i)] = og ? og[i] : target(replica, mb, i);
    stage_backward(s, x.data(), y.at({mb, c}).data(), dy.data(), ig, dw[size_t(c)].data());
  };
  const PipelineStepTimes t = exec.run(work);
  EXPECT_GE(t.comm_s, 0.0);
  EXPECT_GE(t.bubble(), 0.0);
  EXPECT_GE(t.idle_fraction(), 0.0);
  EXPECT_LE(t.idle_fraction(), 1.0);
  // The pool reuses buffers: exactly as many as the list holds at its peak (what the memory
  // estimate counts), and never more than the in-flight inputs and output gradients plus one of
  // each kind in transit.
  EXPECT_EQ(exec.buffers_allocated(), size_t(PipelineExecutor::peak_buffers(shape, pp.rank())));
  EXPECT_LE(exec.buffers_allocated(), size_t(2 * max_in_flight(exec.actions()) + 2));
  const auto want = reference_grads(S, shape.m, replica);
  for (int c = 0; c < shape.v; ++c)
    EXPECT_EQ(dw[size_t(c)], want[size_t(virtual_stage(shape, pp.rank(), c))])
        << "stage " << virtual_stage(shape, pp.rank(), c) << " of " << to_string(exec.actions());
}

std::vector<ScheduleShape> shapes_for(int pp) {
  std::vector<ScheduleShape> out;
  for (int m : {1, 3, pp, 2 * pp, 2 * pp + 1}) {
    out.push_back({.pp = pp, .v = 1, .m = m, .kind = ScheduleKind::one_f_one_b});
    out.push_back({.pp = pp, .v = 1, .m = m, .kind = ScheduleKind::gpipe});
    out.push_back({.pp = pp, .v = 2, .m = m, .kind = ScheduleKind::gpipe});
    for (int v : {2, 3}) {
      const ScheduleShape s{.pp = pp, .v = v, .m = m, .kind = ScheduleKind::interleaved};
      try {
        check_schedule_shape(s);
        out.push_back(s);
      } catch (const Error&) {  // a micro-batch count the interleaved schedule refuses
      }
    }
  }
  return out;
}

TEST(PipelineExecutor, EveryScheduleMatchesTheOneProcessGradients) {
  auto world = make_mpi_world();
  int ran = 0;
  for (const ScheduleShape& s : shapes_for(world->size())) {
    SCOPED_TRACE(std::string(schedule_kind_name(s.kind)) + " pp" + std::to_string(s.pp) + " v" +
                 std::to_string(s.v) + " m" + std::to_string(s.m));
    expect_pipeline_matches(*world, s, 0);
    ++ran;
  }
  EXPECT_GE(ran, 12);
}

TEST(PipelineExecutor, RunsOverThePipelineGroupOfAFoldedLayout) {
  auto world = make_mpi_world();
  if (world->size() != 4) GTEST_SKIP() << "PP2 x DP2 needs 4 ranks";
  const auto layout = ParallelLayout::make(4, /*tp=*/1, /*cp=*/1, /*pp=*/2, /*ep=*/1, /*etp=*/1);
  const auto groups = ProcessGroups::create(*world, layout);
  const int replica = layout.coord(world->rank()).dp;  // each replica pipelines its own data
  for (const ScheduleShape& s : shapes_for(2)) expect_pipeline_matches(*groups.pp, s, replica);
}

TEST(PipelineExecutor, RefusesAGroupOfTheWrongSize) {
  auto world = make_mpi_world();
  auto be = make_backend("cpu");
  const ScheduleShape s{.pp = world->size() + 1, .v = 1, .m = 4, .kind = ScheduleKind::gpipe};
  EXPECT_THROW(PipelineExecutor(*be, *world, s, kWidth), Error);
}

}  // namespace
}  // namespace origami
