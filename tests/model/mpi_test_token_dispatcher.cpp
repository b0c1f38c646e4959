// Multi-rank tests of the token dispatcher (model/moe/token_dispatcher.h) under a layout table:
// one rank alone (no exchange), EP2, ETP2, EP2xETP2, EP4, each also with capacity padding, every
// rank routing different random tokens (some slots dropped, one token dropped entirely):
//   - round trip: dispatch, the identity as the expert, combine with weights summing to 1 gives
//     back each token (dropped slots contribute nothing, whatever their weight);
//   - adjoints: <dispatch x, y> = <x, dispatch_backward y> and <combine y, g> = <y, dy> with dy
//     from combine_backward, summed over all ranks; and <combine y, g> = <w, dweights>;
//   - the plan: counts per expert add up over the ranks that exchange rows, and every routed row
//     reaches the expert it was routed to (after Megatron's test_token_dispatcher.py).
#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <random>
#include <span>
#include <vector>

#include "comm/parallel_layout.h"
#include "model/moe/token_dispatcher.h"

namespace origami {
namespace {

constexpr int64_t kN = 12, kH = 16, kE = 4, kK = 2;
constexpr int64_t kPad = 8;  // capacity padding: C rows per expert (the mean load is 6)

struct Layout {
  const char* name;
  int world;  // 0: every world size, each rank alone (default ModelGroups: no exchange)
  int ep, etp;
  int64_t pad_rows;
  // FSSDP: rows travel over the EP x EDP group, each (source, expert) block to a rank drawn at
  // random (the same draw on every rank), as a placement with copies routes them.
  bool fssdp = false;
  bool empty_rank = false;  // world rank 1 routes nothing (every slot dropped)
};

const Layout kLayouts[] = {
    {"one_rank", 0, 1, 1, 0},    {"one_rank_padded", 0, 1, 1, kPad},
    {"ep2", 2, 2, 1, 0},         {"etp2", 2, 1, 2, 0},
    {"ep2_padded", 2, 2, 1, kPad}, {"etp2_padded", 2, 1, 2, kPad},
    {"ep2_edp2", 4, 2, 1, 0},    {"etp2_edp2", 4, 1, 2, 0},
    {"ep4", 4, 4, 1, 0},         {"ep4_padded", 4, 4, 1, kPad},
    {"ep2_etp2", 4, 2, 2, 0},    {"ep2_etp2_padded", 4, 2, 2, kPad},
    {"fssdp2", 2, 2, 1, 0, true},
    {"fssdp2_empty_rank", 2, 1, 1, 0, true, true},
    {"fssdp4", 4, 2, 1, 0, true},
    {"fssdp4_padded", 4, 1, 1, kPad, true},
    {"fssdp4_empty_rank", 4, 4, 1, 0, true, true},
    {"fssdp_etp2", 4, 1, 2, 0, true},
};

Config dispatch_config(const Layout& l, int world) {
  Config c;
  c.model.hidden_size = kH;
  c.moe.num_experts = kE;
  c.moe.top_k = kK;
  c.parallel.expert = l.ep;
  c.parallel.expert_tensor = l.etp;
  validate(c, world);
  return c;
}

// One layout's dispatcher on this rank, over real process groups (none for the one-rank rows).
struct Rig {
  const Layout& layout;
  Config cfg;
  std::unique_ptr<Backend> be = make_backend("cpu");
  ProcessGroups pg;
  ModelContext ctx;
  TokenDispatcher dispatcher;
  DispatchPlan plan;
  ExpertRoute route;  // fssdp layouts

  Rig(const Layout& l, const Communicator& world)
      : layout(l), cfg(dispatch_config(l, l.world ? world.size() : 1)),
        pg(l.world ? ProcessGroups::create(world, ParallelLayout::from_config(cfg.parallel, world.size()))
                   : ProcessGroups{}),
        ctx{*be, cfg, MicroBatchShape{1, kN}, l.world ? ModelGroups::from(pg) : ModelGroups{}},
        dispatcher(ctx) {
    if (!l.fssdp) return;
    const Communicator& g = *pg.ep_edp;
    route.group = &g;
    std::mt19937 gen(42);  // the same draw on every rank
    for (int64_t i = 0; i < int64_t(g.size()) * kE; ++i) route.dest.push_back(int(gen() % g.size()));
    for (int64_t e = 0; e < kE; ++e)
      for (int s = 0; s < g.size(); ++s)
        if (route.dest_of(s, e, kE) == g.rank()) {
          route.resident.push_back(e);
          break;
        }
  }
  const ExpertRoute* route_ptr() const { return layout.fssdp ? &route : nullptr; }
  bool empty_here() const { return layout.empty_rank && pg.world && pg.world->rank() == 1; }
  void dispatch(const std::vector<float>& x, const std::vector<int32_t>& experts) {
    dispatcher.dispatch(x.data(), experts.data(), layout.pad_rows, plan, route_ptr());
  }
  bool alone() const { return layout.world == 0; }
  int etp() const { return ctx.etp_size(); }
  // Sum over the ranks whose rows meet in this rank's experts (the ETP x EP group), in place.
  template <typename T> void sum_over_exchange(std::vector<T>& v) const {
    if (!alone()) pg.etp_ep->allreduce(std::span<T>(v));
  }
  // Sum over every rank of the world (the adjoint identities hold for the whole job).
  double sum_over_world(double v) const { return alone() ? v : pg.world->allreduce_scalar(v); }
};

// This rank's micro-batch: x [N,H], experts [N,k] (distinct per token, -1 = dropped), weights
// [N,k]. With dyadic x (multiples of 1/64) and weights (multiples of 1/8) every product and sum
// below is exact in fp32. The routed slots' weights sum to 1; a dropped slot carries a nonzero
// weight (capacity mode leaves the router's weight there), which must be ignored. The last token
// has every slot dropped. pad_rows > 0: no expert receives more than pad_rows slots.
struct Tokens {
  std::vector<float> x, weights;
  std::vector<int32_t> experts;
  std::vector<float> routed_weight;  // [N] sum of the routed slots' weights: 1, or 0
};

Tokens make_tokens(uint32_t seed, int64_t pad_rows, bool dyadic, bool none = false) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> q(-64, 64), eighths(1, 7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Tokens t;
  for (int64_t i = 0; i < kN * kH; ++i) t.x.push_back(dyadic ? float(q(gen)) / 64.f : u(gen));
  std::vector<int64_t> load(static_cast<size_t>(kE), 0);
  for (int64_t n = 0; n < kN; ++n) {
    const int32_t first = int32_t(gen() % kE);
    const int32_t second = int32_t((first + 1 + gen() % (kE - 1)) % kE);
    int32_t slot[kK] = {first, second};
    for (int32_t& e : slot) {
      const bool full = pad_rows > 0 && load[size_t(e)] >= pad_rows;
      if (none || n == kN - 1 || full || gen() % 5 == 0) e = -1;
      if (e >= 0) ++load[size_t(e)];
    }
    const bool both = slot[0] >= 0 && slot[1] >= 0;
    const float w0 = both ? float(eighths(gen)) / 8.f : slot[0] >= 0 ? 1.f : 0.375f;
    const float w1 = both ? 1.f - w0 : slot[1] >= 0 ? 1.f : 0.375f;
    t.experts.insert(t.experts.end(), {slot[0], slot[1]});
    t.weights.insert(t.weights.end(), {w0, w1});
    t.routed_weight.push_back((slot[0] >= 0 ? w0 : 0.f) + (slot[1] >= 0 ? w1 : 0.f));
  }
  return t;
}

std::vector<float> random_rows(int64_t rows, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(size_t(rows * kH));
  for (float& x : v) x = u(gen);
  return v;
}

double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}
double abs_dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::abs(double(a[i]) * double(b[i]));
  return s;
}

// Runs `check` for each layout of this world size, on every rank.
template <typename Check> void for_each_layout(Check check) {
  auto world = make_mpi_world();
  int exchanging = 0;
  for (size_t i = 0; i < std::size(kLayouts); ++i) {
    const Layout& l = kLayouts[i];
    if (l.world != 0 && l.world != world->size()) continue;
    exchanging += l.world != 0;
    SCOPED_TRACE(l.name);
    Rig rig(l, *world);
    check(rig, uint32_t(1000 * world->rank() + 10 * i));  // a different seed per rank and layout
  }
  if (world->size() > 1) EXPECT_GT(exchanging, 0) << "no layout for " << world->size() << " ranks";
}

TEST(TokenDispatcher, RoundTripWithTheIdentityExpertReturnsEachToken) {
  for_each_layout([](Rig& rig, uint32_t seed) {
    const Tokens t = make_tokens(seed, rig.layout.pad_rows, /*dyadic=*/true, rig.empty_here());
    rig.dispatch(t.x, t.experts);
    ASSERT_EQ(rig.plan.exchanges, !rig.alone() && (rig.layout.fssdp || rig.ctx.ep_size() > 1 ||
                                                   rig.etp() > 1));
    // The identity expert: combine reduce-scatters fc2's partial sums over ETP, so each ETP rank
    // returns its share 1/ETP of the row (exact: ETP is a power of two).
    const float* in = rig.dispatcher.expert_input(rig.plan);
    std::vector<float> y(in, in + rig.plan.rows * kH);
    for (float& v : y) v /= float(rig.etp());
    std::vector<float> out(t.x.size(), NAN);
    rig.dispatcher.combine(rig.plan, y.data(), t.weights.data(), out.data());
    // Exact: dyadic values with few bits make every product, ETP sum and slot sum exact in fp32,
    // so any difference is a row sent to the wrong place, not rounding.
    int bad = 0;
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t h = 0; h < kH; ++h) {
        const size_t i = size_t(n * kH + h);
        if (out[i] != t.x[i] * t.routed_weight[size_t(n)] && bad++ < 5)
          ADD_FAILURE() << "token " << n << " [" << h << "]: " << out[i] << " vs "
                        << t.x[i] * t.routed_weight[size_t(n)];
      }
    EXPECT_EQ(bad, 0);
  });
}

TEST(TokenDispatcher, DispatchAndCombineBackwardAreAdjoints) {
  for_each_layout([](Rig& rig, uint32_t seed) {
    const Tokens t = make_tokens(seed, rig.layout.pad_rows, /*dyadic=*/false, rig.empty_here());
    rig.dispatch(t.x, t.experts);
    const int64_t rows = rig.plan.rows;
    // Dispatch only copies rows; its backward adds a token's slots and the ETP partials in fp32
    // (~6e-8 relative per addition), and the dot products are summed in double: 1e-5 of the sum
    // of |terms| is over a hundred times the rounding, and far below any misplaced row.
    const double rtol = 1e-5;
    {
      const std::vector<float> y = random_rows(rows, seed + 1);
      std::vector<float> dx(t.x.size(), NAN);
      const double lhs = rig.sum_over_world(dot(rig.dispatcher.expert_input(rig.plan), y.data(), rows * kH));
      const double scale = rig.sum_over_world(abs_dot(rig.dispatcher.expert_input(rig.plan), y.data(), rows * kH));
      rig.dispatcher.dispatch_backward(rig.plan, y.data(), dx.data());
      const double rhs = rig.sum_over_world(dot(t.x.data(), dx.data(), kN * kH));
      ASSERT_GT(scale, 1.0) << "nothing dispatched: the identity is vacuous";
      EXPECT_NEAR(lhs, rhs, rtol * scale) << "<dispatch x, y> vs <x, dispatch_backward y>";
    }
    {
      // combine is linear in the expert outputs y (fixed weights) and in the weights (fixed y).
      const std::vector<float> y = random_rows(rows, seed + 2), g = random_rows(kN, seed + 3);
      std::vector<float> w = t.weights;
      std::mt19937 gen(seed + 4);
      for (float& v : w) v = std::uniform_real_distribution<float>(0.1f, 1.f)(gen);
      std::vector<float> out(t.x.size(), NAN), dy(size_t(rows * kH), NAN),
          dweights(w.size(), NAN);
      rig.dispatcher.combine(rig.plan, y.data(), w.data(), out.data());
      rig.dispatcher.combine_backward(rig.plan, g.data(), y.data(), w.data(), dy.data(), dweights.data());
      const double out_g = dot(out.data(), g.data(), kN * kH);
      const double lhs = rig.sum_over_world(out_g);
      const double rhs = rig.sum_over_world(dot(y.data(), dy.data(), rows * kH));
      const double scale = rig.sum_over_world(abs_dot(y.data(), dy.data(), rows * kH));
      ASSERT_GT(scale, 1.0) << "nothing combined: the identity is vacuous";
      EXPECT_NEAR(lhs, rhs, rtol * scale) << "<combine y, g> vs <y, combine_backward g>";
      // On each rank: out = sum_s w_s y_row(s), so <out, g> = <w, dweights>.
      EXPECT_NEAR(out_g, dot(w.data(), dweights.data(), kN * kK),
                  rtol * abs_dot(out.data(), g.data(), kN * kH) + 1e-6)
          << "<combine y, g> vs <w, dweights>";
      for (size_t i = 0; i < t.experts.size(); ++i)
        if (t.experts[i] < 0) EXPECT_EQ(dweights[i], 0.f) << "dropped slot " << i;
    }
  });
}

TEST(TokenDispatcher, PlanCountsAddUpOverTheExchangingRanks) {
  for_each_layout([](Rig& rig, uint32_t seed) {
    // FSSDP routes are checked by the round trip and the adjoints (every row reaches a rank
    // computing its expert and comes back); the counts below assume EP's expert ownership.
    if (rig.layout.fssdp) return;
    const Tokens t = make_tokens(seed, rig.layout.pad_rows, /*dyadic=*/true);
    const int64_t pad = rig.layout.pad_rows;
    rig.dispatcher.dispatch(t.x.data(), t.experts.data(), pad, rig.plan);
    const DispatchPlan& p = rig.plan;
    // This rank's own count of its routed slots.
    std::vector<int64_t> routed(static_cast<size_t>(kE), 0);
    for (int32_t e : t.experts)
      if (e >= 0) ++routed[size_t(e)];
    EXPECT_EQ(p.routed_counts, routed);
    for (int64_t e = 0; e < kE; ++e) EXPECT_EQ(p.routed_counts_dev.data()[e], routed[size_t(e)]);
    // Rows per expert block this rank sends: its routed slots, or C each when padded.
    std::vector<int64_t> block = pad > 0 ? std::vector<int64_t>(size_t(kE), pad) : routed;
    int64_t local_rows = 0;
    for (int64_t b : block) local_rows += b;
    EXPECT_EQ(p.local_rows, local_rows);

    // Every rank of the ETP x EP group sends its rows for expert e to e's owner, and the owner's
    // ETP peers gather them all: expert_counts[l] of EP rank j is the group's sum of block[j E_l + l].
    const int64_t E_local = kE / rig.ctx.ep_size(), first = rig.ctx.ep_rank() * E_local;
    std::vector<int64_t> group_block = block;
    rig.sum_over_exchange(group_block);
    ASSERT_EQ(int64_t(p.expert_counts.size()), E_local);
    int64_t rows = 0;
    for (int64_t l = 0; l < E_local; ++l) {
      EXPECT_EQ(p.expert_counts[size_t(l)], group_block[size_t(first + l)]) << "local expert " << l;
      rows += p.expert_counts[size_t(l)];
    }
    EXPECT_EQ(p.rows, rows);
    // Summed over the EP group, the experts' rows are every routed row of the ETP x EP group
    // (with ETP = 1 that is the EP group's own routed_counts; with ETP > 1 each EP rank's experts
    // also see its ETP peers' rows).
    if (!rig.alone()) {
      int64_t total = 0;
      for (int64_t e = 0; e < kE; ++e) total += group_block[size_t(e)];
      EXPECT_EQ(rig.pg.ep->allreduce_scalar(rows), total);
    }

    // Every row reaches its expert: per local expert, the rows it holds add up (exactly: dyadic
    // values) to the x rows routed to it across the group; padding rows are zeros.
    std::vector<double> want(size_t(kE * kH), 0.0), got(size_t(E_local * kH), 0.0);
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t s = 0; s < kK; ++s)
        if (const int32_t e = t.experts[size_t(n * kK + s)]; e >= 0)
          for (int64_t h = 0; h < kH; ++h) want[size_t(e * kH + h)] += t.x[size_t(n * kH + h)];
    rig.sum_over_exchange(want);
    const float* in = rig.dispatcher.expert_input(p);
    int64_t row = 0, zero_rows = 0;
    for (int64_t l = 0; l < E_local; ++l)
      for (int64_t r = 0; r < p.expert_counts[size_t(l)]; ++r, ++row) {
        bool zero = true;
        for (int64_t h = 0; h < kH; ++h) {
          got[size_t(l * kH + h)] += in[row * kH + h];
          zero = zero && in[row * kH + h] == 0.f;
        }
        zero_rows += zero;
      }
    for (int64_t l = 0; l < E_local; ++l)
      for (int64_t h = 0; h < kH; ++h)
        EXPECT_EQ(got[size_t(l * kH + h)], want[size_t((first + l) * kH + h)])
            << "local expert " << l << " [" << h << "]";
    std::vector<int64_t> group_routed = routed;
    rig.sum_over_exchange(group_routed);
    int64_t real_rows = 0;  // routed rows that land here (no x row is all zeros in practice)
    for (int64_t l = 0; l < E_local; ++l) real_rows += group_routed[size_t(first + l)];
    EXPECT_EQ(zero_rows, p.rows - real_rows) << "padding rows must be zeros, routed rows not";
  });
}

}  // namespace
}  // namespace origami
