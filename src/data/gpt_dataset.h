// defines: GptIndexParams, GptDataset, split_range()
// Megatron's GPTDataset over one indexed dataset: the sequences of one split, repeated for as
// many epochs as the requested sample count needs, cut into samples of seq_length+1 tokens that
// run across document boundaries (consecutive samples share one boundary token). Three index
// maps make a sample a pure function of (dataset, parameters, i):
//   document_index  sequence ids of every epoch, shuffled;
//   sample_index    per sample, the (document_index position, token offset) where it starts;
//   shuffle_index   the order in which samples are served.
// They are cached under <cache dir>/GPTDataset_indices/ keyed by a hash of every input.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "data/index_cache.h"
#include "data/indexed_dataset.h"
#include "data/sample_source.h"

namespace origami {

struct GptIndexParams {
  int64_t seq_length = 0;
  uint64_t seed = 1234;
  int64_t num_samples = 0;      // 0 = exactly one epoch
  int64_t split_begin = 0;      // sequences [split_begin, split_end) of the dataset
  int64_t split_end = 0;
  int split = 0;                // 0 train, 1 valid, 2 test: names the cache files
};

// Sequences [begin, end) of split `split` (0..2) for normalised `weights`: boundaries at
// round(cumulative weight * num_sequences), as Megatron's get_split_indices.
std::pair<int64_t, int64_t> split_range(std::span<const double> weights, int split,
                                        int64_t num_sequences);

class GptDataset final : public SampleSource {
 public:
  // Loads the index maps from the cache, or builds them (and writes the cache unless
  // cache_dir is "none"). cache_dir "" = <dataset dir>/cache.
  GptDataset(std::shared_ptr<const IndexedDataset> data, const GptIndexParams& params,
             const std::string& cache_dir, bool write_cache = true);

  int64_t size() const override { return int64_t(shuffle_index_.size()); }
  int64_t seq_length() const override { return params_.seq_length; }
  void get(int64_t i, std::span<int32_t> out) const override;

  int64_t num_epochs() const { return num_epochs_; }
  bool loaded_from_cache() const { return from_cache_; }
  const std::string& cache_prefix() const { return cache_prefix_; }
  // The text hashed into the cache key (every parameter that shapes the index maps).
  const std::string& description() const { return description_; }

 private:
  void build();

  std::shared_ptr<const IndexedDataset> data_;
  GptIndexParams params_;
  int64_t num_epochs_ = 0;
  bool from_cache_ = false;
  std::string description_, cache_prefix_;
  CachedArray document_index_, sample_index_, shuffle_index_;
};

}  // namespace origami
