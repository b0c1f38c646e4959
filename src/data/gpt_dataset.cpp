// GptDataset: Megatron's gpt_dataset.py + helpers.cpp build_sample_idx, with ShuffleRng
// (mt19937_64 + Fisher-Yates) in place of numpy's RandomState. One RNG seeded with the seed
// draws the document shuffle(s) first, then the sample shuffle(s).
#include "data/gpt_dataset.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <numeric>

#include "base/error.h"
#include "base/logging.h"
#include "data/shuffle.h"

namespace origami {
namespace {

constexpr int kIndexFormatVersion = 1;
const char* const kSplitNames[3] = {"train", "valid", "test"};

std::string file_identity(const std::string& path) {
  struct stat st {};
  check(::stat(path.c_str(), &st) == 0, "cannot stat {}", path);
  int64_t mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return fmt::format("{{\"size\": {}, \"mtime_ns\": {}}}", int64_t(st.st_size), mtime_ns);
}

}  // namespace

std::pair<int64_t, int64_t> split_range(std::span<const double> weights, int split,
                                        int64_t num_sequences) {
  check(split >= 0 && split < 3, "split {} out of range (0 train, 1 valid, 2 test)", split);
  check(!weights.empty() && weights.size() <= 3, "data.split has {} weights; give 1 to 3 "
        "(train, valid, test)", weights.size());
  double total = 0;
  for (double w : weights) {
    check(w >= 0 && std::isfinite(w), "data.split weight {} is invalid (must be >= 0)", w);
    total += w;
  }
  check(total > 0, "data.split weights sum to 0");
  auto bound = [&](int k) {  // boundary after split k-1
    if (k <= 0) return int64_t(0);
    if (k >= 3) return num_sequences;
    double cum = 0;
    for (int j = 0; j < k && j < int(weights.size()); ++j) cum += weights[size_t(j)];
    return std::min<int64_t>(num_sequences, std::llround(cum / total * double(num_sequences)));
  };
  return {bound(split), bound(split + 1)};
}

GptDataset::GptDataset(std::shared_ptr<const IndexedDataset> data, const GptIndexParams& params,
                       const std::string& cache_dir, bool write_cache)
    : data_(std::move(data)), params_(params) {
  const std::string& prefix = data_->prefix();
  const char* split_name = kSplitNames[params.split];
  check(params.seq_length > 0, "GPT dataset {}: seq_length must be positive, got {}", prefix,
        params.seq_length);
  check(params.num_samples >= 0, "GPT dataset {}: negative sample count {}", prefix,
        params.num_samples);
  check(0 <= params.split_begin && params.split_begin <= params.split_end &&
            params.split_end <= data_->num_sequences(),
        "GPT dataset {}: split range [{}, {}) outside [0, {})", prefix, params.split_begin,
        params.split_end, data_->num_sequences());
  check(data_->num_sequences() > 0, "dataset {} is empty (no documents in {}.idx)", prefix, prefix);
  check(params.split_end > params.split_begin, "dataset {}: the {} split holds no documents "
        "(data.split gives it sequences [{}, {}) of {})", prefix, split_name, params.split_begin,
        params.split_end, data_->num_sequences());
  int64_t tokens_per_epoch = 0;
  for (int64_t s = params.split_begin; s < params.split_end; ++s) tokens_per_epoch += data_->sequence_length(s);
  check(tokens_per_epoch > 1, "dataset {}: the {} split holds {} tokens, too few for one sample",
        prefix, split_name, tokens_per_epoch);
  // Megatron's _get_num_epochs: enough tokens for num_samples * L plus the one extra token.
  num_epochs_ = 1;
  while (num_epochs_ * tokens_per_epoch < params.num_samples * params.seq_length + 1) ++num_epochs_;
  check((num_epochs_ * tokens_per_epoch - 1) / params.seq_length >= 1, "dataset {}: the {} split "
        "holds {} tokens, fewer than one sample of {}+1", prefix, split_name, tokens_per_epoch,
        params.seq_length);

  const std::string abs_prefix = std::filesystem::absolute(prefix).lexically_normal().string();
  description_ = fmt::format(
      "{{\"class\": \"GPTDataset\", \"format\": {}, \"path_prefix\": \"{}\", \"idx\": {}, "
      "\"bin\": {}, \"sequences\": {}, \"split\": \"{}\", \"split_range\": [{}, {}], "
      "\"sequence_length\": {}, \"random_seed\": {}, \"num_samples\": {}, "
      "\"add_extra_token_to_sequence\": true, \"rng\": \"mt19937_64 fisher-yates\"}}",
      kIndexFormatVersion, abs_prefix, file_identity(prefix + ".idx"), file_identity(prefix + ".bin"),
      data_->num_sequences(), split_name, params.split_begin, params.split_end, params.seq_length,
      params.seed, params.num_samples);
  const CacheKey key = cache_key_hash(description_);
  std::string dir = cache_dir.empty()
                        ? (std::filesystem::path(abs_prefix).parent_path() / "cache").string()
                        : cache_dir;
  cache_prefix_ = fmt::format("{}/GPTDataset_indices/{}-GPTDataset-{}", dir, key.hex(), split_name);
  const std::string doc_path = cache_prefix_ + "-document_index.bin",
                    sample_path = cache_prefix_ + "-sample_index.bin",
                    shuffle_path = cache_prefix_ + "-shuffle_index.bin";
  if (cache_dir != "none") {
    auto d = read_cached_array(doc_path, key);
    auto s = read_cached_array(sample_path, key);
    auto h = read_cached_array(shuffle_path, key);
    if (d && s && h && s->size() == 2 * (h->size() + 1)) {
      document_index_ = std::move(*d);
      sample_index_ = std::move(*s);
      shuffle_index_ = std::move(*h);
      from_cache_ = true;
      spdlog::debug("GPT index for {} ({}): loaded {} samples from {}", prefix, split_name, size(),
                    cache_prefix_);
      return;
    }
  }
  auto start = std::chrono::steady_clock::now();
  spdlog::info("building GPT index for {} ({} split, {} sequences, {} tokens/epoch, {} epochs, "
               "seq_length {}, seed {})", prefix, split_name, params.split_end - params.split_begin,
               tokens_per_epoch, num_epochs_, params.seq_length, params.seed);
  build();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (cache_dir != "none" && write_cache) {
    // Description last: the arrays are each complete (atomic) before anything points at them.
    write_cached_array(doc_path, document_index_.values(), key);
    write_cached_array(sample_path, sample_index_.values(), key);
    write_cached_array(shuffle_path, shuffle_index_.values(), key);
    write_text_atomic(cache_prefix_ + "-description.json", description_ + "\n");
  }
  spdlog::info("built GPT index for {} ({}): {} samples in {:.2f} s{}", prefix, split_name, size(),
               secs, cache_dir != "none" && write_cache ? ", cached at " + cache_prefix_ : "");
}

void GptDataset::build() {
  const int64_t L = params_.seq_length;
  const int64_t docs = params_.split_end - params_.split_begin;
  int64_t tokens_per_epoch = 0;
  for (int64_t s = params_.split_begin; s < params_.split_end; ++s) tokens_per_epoch += data_->sequence_length(s);
  const int64_t num_samples = (num_epochs_ * tokens_per_epoch - 1) / L;
  // Megatron: a last epoch that contributes under 80 % of an epoch's samples is shuffled on its
  // own, so its partial coverage lands at the end of the order instead of mixing in.
  bool separate_final_epoch = false;
  int64_t samples_sans_final = num_samples;
  if (num_epochs_ > 1 && params_.num_samples > 0) {
    samples_sans_final = ((num_epochs_ - 1) * tokens_per_epoch - 1) / L;
    const int64_t from_final = params_.num_samples - samples_sans_final;
    const int64_t per_epoch = (tokens_per_epoch - 1) / L;
    separate_final_epoch = double(from_final) < 0.80 * double(per_epoch);
  }
  ShuffleRng rng(params_.seed);

  std::vector<int64_t> doc_index(static_cast<size_t>(num_epochs_ * docs));
  for (int64_t e = 0; e < num_epochs_; ++e) {
    std::iota(doc_index.begin() + e * docs, doc_index.begin() + (e + 1) * docs, params_.split_begin);
  }
  std::span<int64_t> all(doc_index);
  if (separate_final_epoch) {
    fisher_yates(all.first(size_t((num_epochs_ - 1) * docs)), rng);
    fisher_yates(all.last(size_t(docs)), rng);
  } else {
    fisher_yates(all, rng);
  }

  // helpers.cpp build_sample_idx: walk the shuffled documents, L+1 tokens per sample, the last
  // token of a sample being the first of the next.
  std::vector<int64_t> sample_index(size_t(2 * (num_samples + 1)));
  int64_t pos = 0, offset = 0;
  sample_index[0] = 0;
  sample_index[1] = 0;
  const int64_t log_every = std::max<int64_t>(num_samples / 10, 1);
  for (int64_t n = 1; n <= num_samples; ++n) {
    int64_t remaining = L + 1;
    while (remaining != 0) {
      const int64_t doc_length = data_->sequence_length(doc_index[size_t(pos)]) - offset;
      remaining -= doc_length;
      if (remaining <= 0) {
        offset += remaining + doc_length - 1;
        remaining = 0;
      } else {
        ++pos;
        offset = 0;
        if (pos >= int64_t(doc_index.size())) fail("internal: GPT sample index ran past the documents");
      }
    }
    sample_index[size_t(2 * n)] = pos;
    sample_index[size_t(2 * n + 1)] = offset;
    if (num_samples >= 1000000 && n % log_every == 0) {
      spdlog::info("  sample index {}/{} ({}%)", n, num_samples, 100 * n / num_samples);
    }
  }

  std::vector<int64_t> shuffle(static_cast<size_t>(num_samples));
  std::iota(shuffle.begin(), shuffle.end(), int64_t(0));
  std::span<int64_t> sh(shuffle);
  if (separate_final_epoch) {
    fisher_yates(sh.first(size_t(samples_sans_final)), rng);
    fisher_yates(sh.subspan(size_t(samples_sans_final)), rng);
  } else {
    fisher_yates(sh, rng);
  }
  document_index_ = CachedArray(std::move(doc_index));
  sample_index_ = CachedArray(std::move(sample_index));
  shuffle_index_ = CachedArray(std::move(shuffle));
}

void GptDataset::get(int64_t i, std::span<int32_t> out) const {
  const int64_t L = params_.seq_length;
  check(i >= 0 && i < size(), "GPT dataset {}: sample {} out of range [0, {})", data_->prefix(), i,
        size());
  check(int64_t(out.size()) == L + 1, "GPT dataset {}: output holds {} tokens, a sample is {}",
        data_->prefix(), out.size(), L + 1);
  const int64_t j = shuffle_index_[size_t(i)];
  const int64_t d0 = sample_index_[size_t(2 * j)], o0 = sample_index_[size_t(2 * j + 1)];
  const int64_t d1 = sample_index_[size_t(2 * j + 2)], o1 = sample_index_[size_t(2 * j + 3)];
  if (d0 == d1) {
    data_->read<int32_t>(document_index_[size_t(d0)], o0, out);
    return;
  }
  int64_t at = 0;
  for (int64_t d = d0; d <= d1; ++d) {
    const int64_t seq = document_index_[size_t(d)];
    const int64_t from = d == d0 ? o0 : 0;
    const int64_t to = d == d1 ? o1 + 1 : data_->sequence_length(seq);
    check(at + (to - from) <= L + 1, "internal: GPT sample {} of {} overflows {} tokens", i,
          data_->prefix(), L + 1);
    data_->read<int32_t>(seq, from, out.subspan(size_t(at), size_t(to - from)));
    at += to - from;
  }
  check(at == L + 1, "internal: GPT sample {} of {} has {} tokens, expected {}", i, data_->prefix(),
        at, L + 1);
}

}  // namespace origami
