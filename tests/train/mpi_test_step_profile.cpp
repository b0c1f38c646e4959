// logging.profile: timing every op and collective must not change training, and profile.jsonl
// must hold every rank's figures for every logged step, with the collectives each group made.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/logging.h"
#include "comm/communicator.h"
#include "train/trainer.h"
#include "train_test_config.h"

namespace origami {
namespace {

TEST(StepProfile, RecordsEveryRankWithoutChangingTraining) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  ASSERT_EQ(world->size(), 4);
  Config cfg = small_config("profile");
  cfg.training.train_steps = 3;
  cfg.logging.interval = 1;
  cfg.parallel.tensor = 2, cfg.parallel.sequence_parallel = true;  // TP2, DP2
  cfg.parallel.expert = 2;                                         // EP2 over the DP ranks
  Config plain = cfg;
  plain.logging.dir += "-plain";
  cfg.logging.profile = true;
  if (world->rank() == 0) std::filesystem::remove_all(cfg.logging.dir);
  world->barrier();

  const std::vector<double> expected = Trainer(plain, *world).train();
  const std::vector<double> losses = Trainer(cfg, *world).train();
  EXPECT_EQ(losses, expected);  // bitwise: the decorators only time

  if (world->rank() == 0) {
    std::ifstream in(cfg.logging.dir + "/profile.jsonl");
    std::string text;
    int64_t iteration = 0;
    while (std::getline(in, text)) {
      const auto line = nlohmann::json::parse(text);
      EXPECT_EQ(line["iteration"], ++iteration);
      ASSERT_EQ(line["ranks"].size(), 4u);
      const auto& first = line["ranks"][0];
      for (int r = 0; r < 4; ++r) {
        const auto& rank = line["ranks"][size_t(r)];
        EXPECT_EQ(rank["rank"], r);
        EXPECT_GT(rank["ops"]["gemm"]["calls"].get<int64_t>(), 0);
        EXPECT_GT(rank["compute_ms"].get<double>(), 0);
        EXPECT_GT(rank["cpu_ms"].get<double>(), 0);
        // The calling thread's CPU time inside an op or a collective never exceeds its wall time.
        EXPECT_LE(rank["compute_cpu_ms"].get<double>(), rank["compute_ms"].get<double>() + 0.1);
        EXPECT_LE(rank["comm_cpu_ms"].get<double>(), rank["comm_ms"].get<double>() + 0.1);
        // Ops and collectives do not nest on the CPU backend: both fit in the step.
        EXPECT_LE(rank["compute_ms"].get<double>() + rank["comm_ms"].get<double>(),
                  rank["step_ms"].get<double>() * 1.001);
        // Every rank of this layout is alike, so each makes the same collectives per group;
        // TP (sequence parallel) and EP (the dispatcher) are among them.
        for (const char* g : {"tp", "ep"})
          EXPECT_GT(rank["comm"][g]["calls"].get<int64_t>(), 0) << g;
        for (const auto& [group, e] : first["comm"].items())
          EXPECT_EQ(rank["comm"][group]["calls"], e["calls"]) << "rank " << r << " group " << group;
      }
    }
    EXPECT_EQ(iteration, 3);
  }
  world->barrier();
}

}  // namespace
}  // namespace origami
