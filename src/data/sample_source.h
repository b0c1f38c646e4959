// defines: SampleSource, DatasetRequest, open_dataset(), dp_batch_slice()
// What the trainer sees of the data: a list of fixed-length samples, and which of them a
// data-parallel rank reads for a global batch. Global batch i is always samples
// [i*gbs, (i+1)*gbs) of the same list, whatever the DP size and micro-batch count, so runs with
// different layouts see identical data and a resumed run continues from consumed_samples.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "comm/communicator.h"
#include "config/config.h"

namespace origami {

// Fixed-length training samples: get(i) writes seq_length+1 token ids (tokens = x[:-1],
// labels = x[1:]).
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual int64_t size() const = 0;
  virtual int64_t seq_length() const = 0;
  virtual void get(int64_t i, std::span<int32_t> out) const = 0;
};

struct DatasetRequest {
  int64_t seq_length = 0;
  uint64_t seed = 1234;
  int64_t num_samples = 0;      // at least this many samples (more epochs if needed)
  int split = 0;                // 0 train, 1 valid, 2 test (data.split weights, by documents)
};

// Blend of cfg.blend (weights normalised; Megatron's deterministic blending index). Rank 0 of
// `world` builds missing index caches while the others wait (barrier), then every rank maps them.
std::unique_ptr<SampleSource> open_dataset(const DataConfig& cfg, const DatasetRequest& req,
                                           const Communicator& world);

// Sample ids of data-parallel rank dp_rank's slice of the global batch that starts at
// consumed_samples: global batch = [consumed, consumed+gbs), rank r takes the r-th contiguous
// gbs/dp_size block. Error if gbs % dp_size != 0.
std::vector<int64_t> dp_batch_slice(int64_t consumed_samples, int64_t global_batch_size,
                                    int dp_rank, int dp_size);

}  // namespace origami
