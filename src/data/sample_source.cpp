// open_dataset(): validate the blend, open every dataset on every rank (so a bad file fails
// everywhere with the same message), let rank 0 build missing index caches, share its outcome by
// broadcast (an error on rank 0 becomes the same Error on every rank instead of a hang), then
// map the caches everywhere. dp_batch_slice(): the layout-independent batch rule.
#include "data/sample_source.h"

#include <cmath>
#include <fmt/format.h>

#include "base/error.h"
#include "base/logging.h"
#include "data/blended_dataset.h"
#include "data/gpt_dataset.h"

namespace origami {
namespace {

struct Plan {
  std::shared_ptr<const IndexedDataset> data;
  GptIndexParams params;
};

// Runs `fn` on rank 0 first; every rank learns whether it failed, and with what message.
template <typename Fn> void rank0_first(const Communicator& world, Fn&& fn) {
  std::string error;
  if (world.rank() == 0) {
    try {
      fn();
    } catch (const std::exception& e) {
      error = e.what();
      if (error.empty()) error = "unknown error";
    }
  }
  if (world.size() == 1) {
    if (!error.empty()) throw Error(error);
    return;
  }
  int64_t len = int64_t(error.size());
  world.broadcast(&len, 1, CommDType::i64, 0);
  if (len > 0) {
    error.resize(size_t(len));
    world.broadcast(error.data(), len, CommDType::u8, 0);
    throw Error(world.rank() == 0 ? error : "(from rank 0) " + error);
  }
}

}  // namespace

std::unique_ptr<SampleSource> open_dataset(const DataConfig& cfg, const DatasetRequest& req,
                                           const Communicator& world) {
  check(!cfg.blend.empty(), "data.blend is empty: give at least one {{path, weight}} (a dataset "
        "prefix without .bin/.idx)");
  check(req.seq_length > 0, "dataset request: seq_length must be positive, got {}", req.seq_length);
  check(req.split >= 0 && req.split < 3, "dataset request: split {} (0 train, 1 valid, 2 test)",
        req.split);
  check(req.num_samples >= 0, "dataset request: negative sample count {}", req.num_samples);
  double total = 0;
  for (size_t i = 0; i < cfg.blend.size(); ++i) {
    const auto& b = cfg.blend[i];
    check(!b.path.empty(), "data.blend[{}]: empty path", i);
    check(b.weight > 0 && std::isfinite(b.weight), "data.blend[{}] ({}): weight {} is not "
          "positive; blend weights must be > 0", i, b.path, b.weight);
    total += b.weight;
  }
  std::vector<double> weights;
  for (const auto& b : cfg.blend) weights.push_back(b.weight / total);

  const bool single = cfg.blend.size() == 1;
  std::vector<Plan> plans;
  for (size_t i = 0; i < cfg.blend.size(); ++i) {
    Plan p;
    p.data = std::make_shared<IndexedDataset>(cfg.blend[i].path);
    check(p.data->num_sequences() > 0, "dataset {} is empty (no documents in {}.idx)",
          cfg.blend[i].path, cfg.blend[i].path);
    auto [b, e] = split_range(cfg.split, req.split, p.data->num_sequences());
    p.params.seq_length = req.seq_length;
    p.params.seed = req.seed;
    p.params.split = req.split;
    p.params.split_begin = b;
    p.params.split_end = e;
    // Megatron asks each blended dataset for a 0.5 % margin over its share.
    p.params.num_samples =
        single || req.num_samples == 0
            ? req.num_samples
            : int64_t(std::ceil(std::ceil(double(req.num_samples) * weights[i]) * 1.005));
    plans.push_back(std::move(p));
  }

  std::vector<std::unique_ptr<SampleSource>> sources(plans.size());
  auto open_all = [&] {
    for (size_t i = 0; i < plans.size(); ++i) {
      sources[i] = std::make_unique<GptDataset>(plans[i].data, plans[i].params, cfg.cache_dir);
    }
  };
  rank0_first(world, open_all);
  if (world.rank() != 0) open_all();
  if (single) return std::move(sources.front());

  int64_t size = req.num_samples;
  if (size == 0) {  // one epoch of each: as many samples as the scarcest dataset allows
    size = INT64_MAX;
    for (size_t i = 0; i < sources.size(); ++i) {
      size = std::min(size, int64_t(std::floor(double(sources[i]->size()) / weights[i])));
    }
  }
  return std::make_unique<BlendedDataset>(std::move(sources), weights, size);
}

std::vector<int64_t> dp_batch_slice(int64_t consumed_samples, int64_t global_batch_size,
                                    int dp_rank, int dp_size) {
  check(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size, "dp_batch_slice: rank {} of {}",
        dp_rank, dp_size);
  check(global_batch_size > 0 && global_batch_size % dp_size == 0, "global batch size {} is not "
        "divisible by the data-parallel size {}", global_batch_size, dp_size);
  check(consumed_samples >= 0, "dp_batch_slice: negative consumed samples {}", consumed_samples);
  const int64_t per_rank = global_batch_size / dp_size;
  std::vector<int64_t> ids(static_cast<size_t>(per_rank));
  for (int64_t k = 0; k < per_rank; ++k) ids[size_t(k)] = consumed_samples + dp_rank * per_rank + k;
  return ids;
}

}  // namespace origami
