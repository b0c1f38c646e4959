// SMoE-Dropout's frozen random router (moe.router.freeze): after training steps the router keeps
// its initialisation bit for bit (no gradient, no update, no weight decay) under AdamW and
// ZeRO-1 while everything else trains, and an EP layout equals the 1-rank run.
#include <gtest/gtest.h>

#include <vector>

#include "base/logging.h"
#include "comm/communicator.h"
#include "layout_equivalence.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

Config frozen_config(const std::string& name) {
  Config c = small_config(name);
  c.moe.router.freeze = true;
  c.moe.router.aux_loss_coeff = 0.0;  // a frozen router needs (and takes) no balance loss
  c.training.train_steps = 3;
  return c;
}

std::vector<float> values(Trainer& t, const std::string& name) {
  const Param& p = t.model().params().find(name);
  std::vector<float> out(size_t(p.value.numel()));
  t.backend().copy_to_host(out.data(), p.value.data(), p.value.bytes());
  return out;
}

TEST(FrozenRouter, KeepsItsInitialisationWhileTheRestTrains) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  for (bool zero : {false, true}) {
    SCOPED_TRACE(zero ? "ZeRO-1" : "AdamW");
    Config c = frozen_config(std::string("frozen-router-") + (zero ? "zero" : "adamw"));
    c.parallel.expert = world->size();
    c.optimizer.distributed = zero;
    c.optimizer.weight_decay = 0.1;  // would move any parameter the optimizer touched
    Trainer init(c, *world), trained(c, *world);
    trained.train();
    for (const char* name : {"layers.0.moe.router.weight", "layers.1.moe.router.weight"})
      EXPECT_EQ(values(trained, name), values(init, name)) << name;
    EXPECT_NE(values(trained, "layers.0.attention.q.weight"),
              values(init, "layers.0.attention.q.weight"));
  }
}

TEST(FrozenRouter, ExpertParallelMatchesTheSingleRankRun) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  auto solo = world->split(world->rank(), 0, "solo");
  Config par = frozen_config("frozen-router-ep"), ref = frozen_config("frozen-router-ep-ref");
  par.parallel.expert = world->size();
  par.training.train_steps = ref.training.train_steps = 10;
  // zero_ok: the frozen routers have no gradient in either run.
  expect_layout_matches(par, ref, *world, *solo, "frozen_ep", {.zero_ok = true});
}

}  // namespace
}  // namespace origami
