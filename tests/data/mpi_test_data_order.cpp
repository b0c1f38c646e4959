// Multi-rank data order (run under mpirun with 1, 2 and 4 ranks): rank 0 builds the index cache
// while the others wait, every rank maps it, and the samples the DP ranks read for each global
// batch, gathered in rank order, equal the global batch an independent one-process in-memory
// build gives -- the same for every world size, and again after a "resume" at consumed samples.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/error.h"
#include "comm/communicator.h"
#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"
#include "data/sample_source.h"

namespace origami {
namespace {

constexpr int64_t kSeqLength = 16, kGlobalBatch = 8, kSteps = 6;

class DataOrder : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = make_mpi_world();
    // One folder per world size: ctest may run the np 1/2/4 entries at the same time.
    dir_ = std::filesystem::path(ORIGAMI_BINARY_DIR) / "test-tmp" /
           ("mpi-data-order-np" + std::to_string(world_->size()));
    prefix_ = (dir_ / "ds").string();
    if (world_->rank() == 0) {
      std::filesystem::remove_all(dir_);
      IndexedDatasetWriter w(prefix_, TokenDType::u16);
      for (int d = 0; d < 70; ++d) {
        std::vector<int32_t> t(static_cast<size_t>(1 + (d * 29) % 80));
        for (size_t k = 0; k < t.size(); ++k) t[k] = int32_t(d * 100 + int(k) % 100);
        w.add_document(t);
      }
      w.finish();
    }
    world_->barrier();
    cfg_.blend = {{prefix_, 1.0}};
    cfg_.split = {90, 10, 0};
  }

  // Global batches [from_step, kSteps) read as DP rank slices and gathered across ranks.
  std::vector<int32_t> gathered_batches(const SampleSource& src, int64_t from_step) const {
    const int dp = world_->size();
    std::vector<int32_t> all;
    std::vector<int32_t> mine, buf(static_cast<size_t>(kSeqLength + 1));
    for (int64_t step = from_step; step < kSteps; ++step) {
      mine.clear();
      for (int64_t id : dp_batch_slice(step * kGlobalBatch, kGlobalBatch, world_->rank(), dp)) {
        src.get(id, buf);
        mine.insert(mine.end(), buf.begin(), buf.end());
      }
      std::vector<int32_t> batch(mine.size() * size_t(dp));
      world_->allgather(mine.data(), batch.data(), int64_t(mine.size()), CommDType::i32);
      all.insert(all.end(), batch.begin(), batch.end());
    }
    return all;
  }

  // The same batches from one in-memory build on this rank alone (no cache, no communicator).
  std::vector<int32_t> reference(int64_t from_step) const {
    auto data = std::make_shared<IndexedDataset>(prefix_);
    GptIndexParams p;
    p.seq_length = kSeqLength;
    p.seed = 42;
    p.num_samples = kGlobalBatch * kSteps;
    std::tie(p.split_begin, p.split_end) = split_range(cfg_.split, 0, data->num_sequences());
    GptDataset gpt(data, p, "none");
    std::vector<int32_t> all, buf(static_cast<size_t>(kSeqLength + 1));
    for (int64_t id = from_step * kGlobalBatch; id < kSteps * kGlobalBatch; ++id) {
      gpt.get(id, buf);
      all.insert(all.end(), buf.begin(), buf.end());
    }
    return all;
  }

  std::unique_ptr<Communicator> world_;
  std::filesystem::path dir_;
  std::string prefix_;
  DataConfig cfg_;
  DatasetRequest req_{.seq_length = kSeqLength, .seed = 42, .num_samples = kGlobalBatch * kSteps,
                      .split = 0};
};

TEST_F(DataOrder, GlobalBatchesAreLayoutIndependentAndResumeExactly) {
  auto src = open_dataset(cfg_, req_, *world_);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "cache" / "GPTDataset_indices"));
  const auto expected = reference(0);
  EXPECT_EQ(gathered_batches(*src, 0), expected);
  // A restarted job: fresh open (cache now present on every rank), continue at step 3.
  auto resumed = open_dataset(cfg_, req_, *world_);
  EXPECT_EQ(gathered_batches(*resumed, 3),
            std::vector<int32_t>(expected.begin() + 3 * kGlobalBatch * (kSeqLength + 1), expected.end()));
}

TEST_F(DataOrder, ABadDatasetFailsOnEveryRankWithoutHanging) {
  DataConfig bad = cfg_;
  bad.blend = {{(dir_ / "missing").string(), 1.0}};
  EXPECT_THROW(open_dataset(bad, req_, *world_), Error);
  bad = cfg_;
  bad.split = {100, 0, 0};
  DatasetRequest valid = req_;
  valid.split = 1;
  EXPECT_THROW(open_dataset(bad, valid, *world_), Error);
  world_->barrier();  // every rank got here
}

}  // namespace
}  // namespace origami
