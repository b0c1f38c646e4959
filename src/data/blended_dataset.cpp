// BlendedDataset: the blending index is cheap (size x datasets operations) and computed in
// memory on every rank; only the per-dataset GPT indices are cached.
#include "data/blended_dataset.h"

#include <algorithm>

#include "base/error.h"

namespace origami {

BlendingIndex blending_index(std::span<const double> weights, int64_t size) {
  check(!weights.empty() && weights.size() < 32768, "blend of {} datasets (1..32767 allowed)",
        weights.size());
  BlendingIndex idx;
  idx.dataset.resize(size_t(size));
  idx.dataset_sample.resize(size_t(size));
  std::vector<int64_t> count(weights.size(), 0);
  for (int64_t s = 0; s < size; ++s) {
    const double at = double(std::max<int64_t>(s, 1));
    size_t best = 0;
    double best_error = weights[0] * at - double(count[0]);
    for (size_t i = 1; i < weights.size(); ++i) {
      double error = weights[i] * at - double(count[i]);
      if (error > best_error) {
        best_error = error;
        best = i;
      }
    }
    idx.dataset[size_t(s)] = int16_t(best);
    idx.dataset_sample[size_t(s)] = count[best]++;
  }
  return idx;
}

BlendedDataset::BlendedDataset(std::vector<std::unique_ptr<SampleSource>> sources,
                               std::vector<double> weights, int64_t size)
    : sources_(std::move(sources)), index_(blending_index(weights, size)) {
  check(sources_.size() == weights.size(), "blend: {} sources but {} weights", sources_.size(),
        weights.size());
  std::vector<int64_t> need(sources_.size(), 0);
  for (size_t s = 0; s < index_.dataset.size(); ++s) {
    auto d = size_t(index_.dataset[s]);
    need[d] = std::max(need[d], index_.dataset_sample[s] + 1);
  }
  for (size_t d = 0; d < sources_.size(); ++d) {
    check(sources_[d]->seq_length() == sources_[0]->seq_length(), "blend: dataset {} has "
          "seq_length {}, dataset 0 has {}", d, sources_[d]->seq_length(), sources_[0]->seq_length());
    check(need[d] <= sources_[d]->size(), "blend: dataset {} holds {} samples but the blend "
          "needs {}", d, sources_[d]->size(), need[d]);
  }
}

void BlendedDataset::get(int64_t i, std::span<int32_t> out) const {
  check(i >= 0 && i < size(), "blended dataset: sample {} out of range [0, {})", i, size());
  sources_[size_t(index_.dataset[size_t(i)])]->get(index_.dataset_sample[size_t(i)], out);
}

}  // namespace origami
