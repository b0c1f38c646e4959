// The MoE variants (docs/moe.md "Variants") under every layout: MoE++'s zero-computation
// experts and gating residual, AdaMoE's null experts, RMoE's recurrent router and PR-MoE's
// residual MoE each train under EP, ETP, TP + SP, CP, PP (1F1B and interleaved, with EP and TP,
// and with full recomputation), and FSSDP with the same first-step gradients (every element, mapped to its
// global index) and 8-step losses as the 1-rank run. (Their bitwise resume: CheckpointRouter/RouterResume.* in
// mpi_test_checkpoint.cpp.)
#include <gtest/gtest.h>

#include <functional>

#include "base/logging.h"
#include "comm/communicator.h"
#include "layout_equivalence.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

struct Variant {
  const char* name;
  std::function<void(Config&)> apply;
};

const Variant kVariants[] = {
    {"moepp", [](Config& c) {
       c.moe.zero_compute_experts = {.zero = 1, .copy = 1, .constant = 1, .balance_weight = 0.5};
     }},
    {"adamoe", [](Config& c) {
       c.moe.null_experts = 4;
       c.moe.top_k = 3;
     }},
    {"residual", [](Config& c) {
       c.moe.residual = true;
       c.moe.top_k = 1;
     }},
    // The cross-layer routers: under PP their state crosses the stage boundary with the hidden
    // state (and its gradient comes back with the input gradient).
    {"moepp_gating_residual", [](Config& c) {
       c.moe.router.gating_residual = true;
       c.moe.zero_compute_experts = {.zero = 1, .copy = 1};
     }},
    {"rmoe", [](Config& c) {
       c.moe.router.kind = "recurrent";
       c.moe.router.recurrent_dim = 16;
     }},
    // Pyramid MoE (with a residual MLP, as in PR-MoE): 4 experts, then 8 (every EP here divides).
    {"pyramid_residual", [](Config& c) {
       c.moe.num_experts_per_layer = {4, 8};
       c.moe.residual = true;
     }},
};

struct Layout {
  const char* name;
  int world, tp, cp, pp, ep, etp, v = 1;
  const char* recompute = "none";  // the parallel run's training.recompute
  bool fssdp = false;               // moe.fssdp (the planned placement)
};

const Layout kLayouts[] = {
    {"ep2", 2, 1, 1, 1, 2, 1},   {"etp2", 2, 1, 1, 1, 1, 2}, {"tp2_sp", 2, 2, 1, 1, 1, 1},
    {"cp2", 2, 1, 2, 1, 1, 1},   {"pp2", 2, 1, 1, 2, 1, 1},  {"pp2_v2", 2, 1, 1, 2, 1, 1, 2},
    {"tp2_ep4", 4, 2, 1, 1, 4, 1}, {"pp2_ep2", 4, 1, 1, 2, 2, 1}, {"pp2_tp2", 4, 2, 1, 2, 1, 1},
    // Full recomputation re-runs each layer (and its router state) inside the backward.
    {"ep2_full_recompute", 2, 1, 1, 1, 2, 1, 1, "full"},
    {"pp2_cp2_full_recompute", 4, 1, 2, 2, 1, 1, 1, "full"},
    // FSSDP owns and copies the FFN experts; the zero-computation ones stay on every rank.
    {"fssdp_ep2_edp2", 4, 1, 1, 1, 2, 1, 1, "none", true},
};

Config variant_config(const Variant& v, const std::string& run) {
  Config c = small_config(std::string("variant-") + v.name + "-" + run);
  c.training.train_steps = 8;
  v.apply(c);
  return c;
}

TEST(MoeVariants, EveryLayoutMatchesTheSingleRankRun) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");
  int ran = 0;
  for (const Variant& v : kVariants)
    for (const Layout& l : kLayouts) {
      if (l.world != world->size()) continue;
      Config par = variant_config(v, l.name), ref = variant_config(v, std::string(l.name) + "-ref");
      set_parallel(par, l.tp, l.cp, l.pp, l.ep, l.etp);
      par.training.recompute = l.recompute;
      if (l.fssdp && !par.moe.num_experts_per_layer.empty()) continue;  // refused (config test)
      par.moe.fssdp.enabled = l.fssdp;
      if (l.v > 1) {  // interleaved: four layers, two chunks of one per rank
        par.parallel.virtual_pipeline = l.v;
        par.parallel.pipeline_schedule = "interleaved";
        par.model.num_layers = ref.model.num_layers = 4;
        if (!par.moe.num_experts_per_layer.empty())
          par.moe.num_experts_per_layer = ref.moe.num_experts_per_layer = {4, 4, 8, 8};
      }
      expect_layout_matches(par, ref, *world, *solo, std::string(v.name) + " " + l.name);
      ++ran;
    }
  EXPECT_GT(ran, 0) << "no layout for " << world->size() << " ranks";
}

}  // namespace
}  // namespace origami
