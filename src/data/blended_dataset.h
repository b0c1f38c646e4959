// defines: BlendedDataset, blending_index()
// Several sample sources mixed by weight, Megatron's deterministic (not random) blending: sample
// s goes to the dataset whose share lags its target the most, so any prefix of the blend holds
// each dataset in proportion to its weight (to within one sample).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "data/sample_source.h"

namespace origami {

struct BlendingIndex {
  std::vector<int16_t> dataset;        // which source serves blended sample s
  std::vector<int64_t> dataset_sample; // and which of its samples
};

// helpers.cpp build_blending_indices: for s in [0, size): i = argmax w_i*max(s,1) - count_i
// (lowest i on ties). `weights` must be normalised.
BlendingIndex blending_index(std::span<const double> weights, int64_t size);

class BlendedDataset final : public SampleSource {
 public:
  // Throws if a source is too small for the samples the index assigns to it.
  BlendedDataset(std::vector<std::unique_ptr<SampleSource>> sources, std::vector<double> weights,
                 int64_t size);
  int64_t size() const override { return int64_t(index_.dataset.size()); }
  int64_t seq_length() const override { return sources_.front()->seq_length(); }
  void get(int64_t i, std::span<int32_t> out) const override;

 private:
  std::vector<std::unique_ptr<SampleSource>> sources_;
  BlendingIndex index_;
};

}  // namespace origami
