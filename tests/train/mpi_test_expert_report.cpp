// The expert-specialisation report: per dataset and MoE layer, expert frequencies that sum to 1,
// the same on N ranks as on 1 (it measures the model, not the layout), written as JSON and CSV.
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

TEST(ExpertReport, FrequenciesPerDatasetAreLayoutIndependent) {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world();
  Config cfg = small_config("report" + std::to_string(world->size()));
  cfg.training.train_steps = 3;
  cfg.training.eval_steps = 2;
  cfg.logging.expert_report_interval = 3;
  if (world->rank() == 0) std::filesystem::remove_all(cfg.logging.dir);  // rank 0 owns the run dir
  world->barrier();
  Trainer par(cfg, *world);
  par.train();
  const ExpertReport report = par.expert_report();
  ASSERT_EQ(report.datasets.size(), cfg.data.blend.size());
  for (const auto& layers : report.freq) {
    ASSERT_EQ(layers.size(), 2u);
    for (const auto& f : layers) {
      double sum = 0;
      for (double x : f) sum += x;
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
  }
  auto solo = world->split(world->rank() == 0 ? 0 : 1, world->rank(), "solo");
  if (world->rank() == 0) {
    Config one = cfg;
    one.logging.dir += "-ref";
    Trainer ref(one, *solo);
    ref.train();
    const ExpertReport expected = ref.expert_report();
    for (size_t d = 0; d < expected.freq.size(); ++d)
      for (size_t l = 0; l < expected.freq[d].size(); ++l)
        for (size_t e = 0; e < expected.freq[d][l].size(); ++e)
          // Identical but for routing near-ties flipped by fp32 summation order.
          EXPECT_NEAR(report.freq[d][l][e], expected.freq[d][l][e], 2e-3) << d << " " << l << " " << e;
    // The run wrote the report at its last step: one JSON line naming every dataset.
    std::ifstream json(cfg.logging.dir + "/expert_report.json");
    std::string line;
    ASSERT_TRUE(std::getline(json, line));
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["iteration"], 3);
    EXPECT_EQ(j["datasets"].size(), cfg.data.blend.size());
    EXPECT_TRUE(std::filesystem::exists(cfg.logging.dir + "/expert_report.csv"));
  }
  world->barrier();
}

}  // namespace
}  // namespace origami
