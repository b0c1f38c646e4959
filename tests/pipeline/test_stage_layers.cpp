// Tests of the layer split (pipeline/stage_layers.h): Megatron's interleaved placement (8 layers,
// PP2 v2: rank 0 holds [0,2) and [4,6)), uneven first and last stages with and without chunks,
// ranges always tiling [0, num_layers), and every split that does not add up or divide refused
// with the keys named (30 layers on PP4, Megatron's silent 28-of-30).
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "config/error_matchers.h"
#include "pipeline/stage_layers.h"

namespace origami {
namespace {

using Ranges = std::vector<std::pair<int, int>>;

TEST(PipelineStageLayers, InterleavedChunksTakeLayersInVirtualStageOrder) {
  // index chunk * pp + rank: rank 0 chunk 0, rank 1 chunk 0, rank 0 chunk 1, rank 1 chunk 1
  EXPECT_EQ(stage_layers(8, 2, 2, 0, 0), (Ranges{{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  EXPECT_EQ(stage_layers(8, 4, 1, 0, 0), (Ranges{{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  EXPECT_EQ(stage_layers(6, 1, 3, 0, 0), (Ranges{{0, 2}, {2, 4}, {4, 6}}));
  EXPECT_EQ(stage_layers(5, 1, 1, 0, 0), (Ranges{{0, 5}}));
  EXPECT_EQ(stage_layers(5, 1, 1, 5, 5), (Ranges{{0, 5}}));
}

TEST(PipelineStageLayers, UnevenFirstAndLastStages) {
  EXPECT_EQ(stage_layers(10, 4, 1, 1, 3), (Ranges{{0, 1}, {1, 4}, {4, 7}, {7, 10}}));
  EXPECT_EQ(stage_layers(30, 4, 1, 9, 0), (Ranges{{0, 9}, {9, 16}, {16, 23}, {23, 30}}));
  EXPECT_EQ(stage_layers(30, 4, 1, 0, 6), (Ranges{{0, 8}, {8, 16}, {16, 24}, {24, 30}}));
  EXPECT_EQ(stage_layers(6, 2, 1, 2, 4), (Ranges{{0, 2}, {2, 6}}));
  // with chunks each rank's count splits v ways: rank 0 has 4 (2 + 2), rank 1 has 8 (4 + 4)
  EXPECT_EQ(stage_layers(12, 2, 2, 4, 8), (Ranges{{0, 2}, {2, 6}, {6, 8}, {8, 12}}));
}

TEST(PipelineStageLayers, RangesTileAllLayersForEveryEvenSplit) {
  for (int pp : {1, 2, 4, 8})
    for (int v : {1, 2, 3})
      for (int layers = pp * v; layers <= 48; layers += pp * v) {
        const Ranges r = stage_layers(layers, pp, v, 0, 0);
        ASSERT_EQ(static_cast<int>(r.size()), pp * v);
        int next = 0;
        for (const auto& [begin, end] : r) {
          EXPECT_EQ(begin, next);
          EXPECT_EQ(end - begin, layers / (pp * v));
          next = end;
        }
        EXPECT_EQ(next, layers);
      }
}

TEST(PipelineStageLayers, ThirtyLayersOnFourStagesNeedAnUnevenSplit) {
  EXPECT_ERROR_HAS(stage_layers(30, 4, 1, 0, 0),
                   {"model.num_layers=30", "not divisible by parallel.pipeline=4", "28 or 32",
                    "parallel.pipeline_first_stage_layers=6", "then 8 per other rank"});
}

TEST(PipelineStageLayers, CountsThatDoNotAddUpAreRefused) {
  EXPECT_ERROR_HAS(
      stage_layers(30, 2, 1, 14, 14),
      {"parallel.pipeline_first_stage_layers=14", "parallel.pipeline_last_stage_layers=14",
       "place 28 layers but model.num_layers=30", "add up exactly"});
  EXPECT_ERROR_HAS(
      stage_layers(30, 4, 1, 5, 6),
      {"parallel.pipeline_first_stage_layers=5", "parallel.pipeline_last_stage_layers=6",
       "leave 19 of model.num_layers=30 for the other 2 rank(s)"});
  EXPECT_ERROR_HAS(stage_layers(8, 4, 1, 4, 4), {"leave 0 of model.num_layers=8"});
  EXPECT_ERROR_HAS(stage_layers(8, 1, 1, 4, 0),
                   {"parallel.pipeline=1", "parallel.pipeline_first_stage_layers=4"});
  EXPECT_ERROR_HAS(stage_layers(8, 2, 1, -1, 0), {"must not be negative"});
}

TEST(PipelineStageLayers, MoreStagesThanLayersIsRefused) {
  EXPECT_ERROR_HAS(
      stage_layers(4, 8, 1, 0, 0),
      {"parallel.pipeline=8 is larger than model.num_layers=4", "parallel.pipeline <= 4"});
}

TEST(PipelineStageLayers, ChunksMustDivideEveryRanksLayers) {
  EXPECT_ERROR_HAS(
      stage_layers(12, 2, 4, 0, 0),
      {"parallel.virtual_pipeline=4", "the 6 layers of pipeline rank 0", "model.num_layers=12"});
  EXPECT_ERROR_HAS(stage_layers(12, 2, 2, 5, 7),
                   {"parallel.virtual_pipeline=2", "the 5 layers of pipeline rank 0",
                    "parallel.pipeline_first_stage_layers=5"});
}

}  // namespace
}  // namespace origami
