// GPT samples, index caching, splits, blending and the layout-independent batch rule. Token
// values encode (document, position) as doc*1000 + pos, so a test can tell from a sample alone
// which stream positions it covers.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "base/error.h"
#include "data/blended_dataset.h"
#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"
#include "data/sample_source.h"
#include "local_comm.h"

namespace origami {
namespace {

using testing::LocalComm;
using testing::TempDir;

// Documents of varied lengths (some shorter than a sample, one empty); token = doc*1000 + pos.
int64_t write_dataset(const std::string& prefix, int docs, int seed = 0) {
  IndexedDatasetWriter w(prefix, TokenDType::i32);
  for (int d = 0; d < docs; ++d) {
    int len = d == 3 ? 0 : 1 + (d * 37 + seed * 11) % 90;
    std::vector<int32_t> t(static_cast<size_t>(len));
    for (int k = 0; k < len; ++k) t[size_t(k)] = d * 1000 + k;
    w.add_document(t);
  }
  w.finish();
  return w.num_tokens();
}

std::vector<int32_t> sample(const SampleSource& s, int64_t i) {
  std::vector<int32_t> out(static_cast<size_t>(s.seq_length() + 1));
  s.get(i, out);
  return out;
}

GptIndexParams params(int64_t L, int64_t n, int64_t docs, uint64_t seed = 1234) {
  GptIndexParams p;
  p.seq_length = L;
  p.num_samples = n;
  p.seed = seed;
  p.split_begin = 0;
  p.split_end = docs;
  return p;
}

TEST(GptDataset, SamplesAreContiguousRunsOfTheShuffledDocumentStream) {
  TempDir dir("gpt-contiguous");
  const int64_t tokens = write_dataset(dir / "ds", 40);
  auto data = std::make_shared<IndexedDataset>(dir / "ds");
  const int64_t L = 16;
  GptDataset gpt(data, params(L, 0, 40), dir / "cache");
  ASSERT_EQ(gpt.num_epochs(), 1);
  ASSERT_EQ(gpt.size(), (tokens - 1) / L);  // Megatron's sample count for one epoch
  std::set<int32_t> covered;
  for (int64_t i = 0; i < gpt.size(); ++i) {
    auto x = sample(gpt, i);
    for (size_t k = 1; k < x.size(); ++k) {
      // Within a document positions advance by one; across a boundary the next starts at 0
      // (after the previous document's last token).
      const bool same_doc = x[k] / 1000 == x[k - 1] / 1000 && x[k] == x[k - 1] + 1;
      const bool new_doc = x[k] % 1000 == 0 && x[k] / 1000 != x[k - 1] / 1000 &&
                           x[k - 1] % 1000 == data->sequence_length(x[k - 1] / 1000) - 1;
      ASSERT_TRUE(same_doc || new_doc) << "sample " << i << " token " << k;
    }
    covered.insert(x.begin(), x.end());
  }
  // Samples tile the stream, sharing one boundary token: n*L+1 distinct positions, each once.
  EXPECT_EQ(int64_t(covered.size()), gpt.size() * L + 1);
}

TEST(GptDataset, OrderIsDeterministicFromTheSeedAndDiffersAcrossSeeds) {
  TempDir dir("gpt-seed");
  write_dataset(dir / "ds", 30);
  auto data = std::make_shared<IndexedDataset>(dir / "ds");
  GptDataset a(data, params(8, 0, 30, 1), "none"), b(data, params(8, 0, 30, 1), "none"),
      c(data, params(8, 0, 30, 2), "none");
  int differ = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(sample(a, i), sample(b, i));
    differ += sample(a, i) != sample(c, i);
  }
  EXPECT_GT(differ, a.size() / 2);
}

TEST(GptDataset, MoreSamplesThanAnEpochUseMoreEpochs) {
  TempDir dir("gpt-epochs");
  const int64_t tokens = write_dataset(dir / "ds", 20);
  auto data = std::make_shared<IndexedDataset>(dir / "ds");
  const int64_t L = 10, want = 2 * tokens / L + 3;  // just past two epochs
  GptDataset gpt(data, params(L, want, 20), "none");
  EXPECT_EQ(gpt.num_epochs(), 3);  // smallest e with e*tokens >= want*L + 1
  EXPECT_GE(gpt.size(), want);
  // The first two epochs' samples come first (the short third epoch is shuffled separately),
  // so the first (2*tokens-1)/L samples hold every token twice, except at most L tokens at the
  // seam where the second epoch's last sample stops.
  const int64_t two_epochs = (2 * tokens - 1) / L;
  std::map<int32_t, int> seen;
  for (int64_t i = 0; i < two_epochs; ++i) {
    auto x = sample(gpt, i);
    for (size_t k = 0; k < x.size() - 1; ++k) seen[x[k]]++;
  }
  EXPECT_EQ(int64_t(seen.size()), tokens);
  int64_t once = 0;
  for (auto [tok, n] : seen) {
    EXPECT_LE(n, 2) << tok;
    once += n == 1;
  }
  EXPECT_LE(once, L);
}

TEST(GptDataset, IndexIsCachedReusedAndRebuiltWhenTheDataChanges) {
  TempDir dir("gpt-cache");
  write_dataset(dir / "ds", 25);
  auto data = std::make_shared<IndexedDataset>(dir / "ds");
  GptDataset first(data, params(12, 50, 25), "");  // default: <dataset dir>/cache
  EXPECT_FALSE(first.loaded_from_cache());
  const auto cache = dir.path() / "cache" / "GPTDataset_indices";
  ASSERT_TRUE(std::filesystem::exists(cache));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(cache)) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "temp file left: " << e.path();
    files++;
  }
  EXPECT_EQ(files, 4);  // document, sample, shuffle index + description

  GptDataset second(data, params(12, 50, 25), "");
  EXPECT_TRUE(second.loaded_from_cache());
  for (int64_t i = 0; i < first.size(); ++i) ASSERT_EQ(sample(first, i), sample(second, i));

  // Any parameter that shapes the maps is part of the key.
  GptDataset other_seed(data, params(12, 50, 25, 99), "");
  EXPECT_FALSE(other_seed.loaded_from_cache());
  GptDataset other_length(data, params(13, 50, 25), "");
  EXPECT_FALSE(other_length.loaded_from_cache());

  // A half-written cache file is never trusted.
  const std::string shuffle = second.cache_prefix() + "-shuffle_index.bin";
  std::filesystem::resize_file(shuffle, std::filesystem::file_size(shuffle) - 8);
  GptDataset after_damage(data, params(12, 50, 25), "");
  EXPECT_FALSE(after_damage.loaded_from_cache());
  for (int64_t i = 0; i < first.size(); ++i) ASSERT_EQ(sample(first, i), sample(after_damage, i));

  // Rewriting the dataset (new .idx mtime/size) invalidates the key.
  std::filesystem::remove(dir / "ds.idx");
  write_dataset(dir / "ds", 25, /*seed=*/1);
  auto rewritten = std::make_shared<IndexedDataset>(dir / "ds");
  GptDataset fresh(rewritten, params(12, 50, 25), "");
  EXPECT_FALSE(fresh.loaded_from_cache());
}

TEST(GptDataset, SplitsHoldDisjointDocuments) {
  TempDir dir("gpt-split");
  write_dataset(dir / "ds", 50);
  std::vector<double> w{80, 10, 10};
  std::set<int32_t> docs[3];
  int64_t begin = 0;
  for (int s = 0; s < 3; ++s) {
    auto [b, e] = split_range(w, s, 50);
    EXPECT_EQ(b, begin);
    begin = e;
    DataConfig cfg;
    cfg.blend = {{dir / "ds", 1.0}};
    cfg.split = w;
    cfg.cache_dir = "none";
    auto src = open_dataset(cfg, {.seq_length = 4, .seed = 1, .num_samples = 0, .split = s}, LocalComm());
    for (int64_t i = 0; i < src->size(); ++i) {
      for (int32_t t : sample(*src, i)) {
        EXPECT_GE(t / 1000, b);
        EXPECT_LT(t / 1000, e);
        docs[s].insert(t / 1000);
      }
    }
  }
  EXPECT_EQ(begin, 50);
  EXPECT_EQ(split_range(w, 0, 50), (std::pair<int64_t, int64_t>{0, 40}));
}

TEST(Blend, DeterministicIndexFollowsTheWeights) {
  std::vector<double> w{0.5, 0.3, 0.2};
  auto idx = blending_index(w, 1000);
  std::vector<int64_t> count(3, 0);
  for (size_t s = 0; s < idx.dataset.size(); ++s) {
    EXPECT_EQ(idx.dataset_sample[s], count[size_t(idx.dataset[s])]);
    count[size_t(idx.dataset[s])]++;
    // Every prefix holds each dataset within one sample of its share.
    for (size_t i = 0; i < 3; ++i) EXPECT_LE(std::abs(double(count[i]) - w[i] * double(s + 1)), 1.0 + 1e-9);
  }
}

TEST(Blend, OpenDatasetMixesSourcesByWeight) {
  TempDir dir("blend");
  write_dataset(dir / "a", 30);
  write_dataset(dir / "b", 30, 1);
  DataConfig cfg;
  cfg.blend = {{dir / "a", 3.0}, {dir / "b", 1.0}};
  cfg.split = {1, 0, 0};
  auto src = open_dataset(cfg, {.seq_length = 8, .seed = 5, .num_samples = 200, .split = 0}, LocalComm());
  ASSERT_EQ(src->size(), 200);
  // Datasets a and b share token values, so tell them apart by their lengths: document d of a
  // has 1 + 37d % 90 tokens, of b 1 + (37d + 11) % 90. Count samples whose first run of positions
  // fits only a: simpler, reopen each alone and match samples exactly.
  DataConfig only_a = cfg, only_b = cfg;
  only_a.blend = {{dir / "a", 1.0}};
  only_b.blend = {{dir / "b", 1.0}};
  auto a = open_dataset(only_a, {.seq_length = 8, .seed = 5, .num_samples = 151, .split = 0}, LocalComm());
  auto b = open_dataset(only_b, {.seq_length = 8, .seed = 5, .num_samples = 51, .split = 0}, LocalComm());
  auto idx = blending_index(std::vector<double>{0.75, 0.25}, 200);
  for (int64_t i = 0; i < 200; ++i) {
    const auto& part = idx.dataset[size_t(i)] == 0 ? *a : *b;
    ASSERT_EQ(sample(*src, i), sample(part, idx.dataset_sample[size_t(i)])) << i;
  }
}

void expect_error(const std::function<void()>& fn, const std::string& what) {
  try {
    fn();
    ADD_FAILURE() << "expected an Error mentioning " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(OpenDataset, RejectsBadBlendsAndEmptyData) {
  TempDir dir("open-errors");
  write_dataset(dir / "ds", 10);
  IndexedDatasetWriter(dir / "empty", TokenDType::u16).finish();
  DataConfig cfg;
  DatasetRequest req{.seq_length = 4, .seed = 1, .num_samples = 10, .split = 0};
  expect_error([&] { open_dataset(cfg, req, LocalComm()); }, "data.blend is empty");
  cfg.blend = {{dir / "ds", 1.0}, {dir / "ds", 0.0}};
  expect_error([&] { open_dataset(cfg, req, LocalComm()); }, "weight 0 is not positive");
  cfg.blend = {{dir / "ds", -2.0}};
  expect_error([&] { open_dataset(cfg, req, LocalComm()); }, "data.blend[0]");
  cfg.blend = {{dir / "empty", 1.0}};
  expect_error([&] { open_dataset(cfg, req, LocalComm()); }, (dir / "empty") + " is empty");
  cfg.blend = {{dir / "missing", 1.0}};
  expect_error([&] { open_dataset(cfg, req, LocalComm()); }, (dir / "missing") + ".idx does not exist");
  cfg.blend = {{dir / "ds", 1.0}};
  cfg.split = {1, 0, 0};
  req.split = 1;
  expect_error([&] { open_dataset(cfg, req, LocalComm()); }, "valid split holds no documents");
}

TEST(BatchSlice, GlobalBatchIsTheSameForAnyDataParallelSize) {
  const int64_t gbs = 16;
  for (int64_t consumed : {int64_t(0), int64_t(16), int64_t(48)}) {
    std::vector<int64_t> reference = dp_batch_slice(consumed, gbs, 0, 1);
    for (int dp : {2, 4, 8}) {
      std::vector<int64_t> joined;
      for (int r = 0; r < dp; ++r) {
        auto part = dp_batch_slice(consumed, gbs, r, dp);
        EXPECT_EQ(int64_t(part.size()), gbs / dp);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      EXPECT_EQ(joined, reference) << "dp " << dp << " consumed " << consumed;
    }
  }
  EXPECT_THROW(dp_batch_slice(0, 10, 0, 4), Error);
}

// Reading global batches through rank slices, for DP 1/2/4, gives the same tokens; a "resumed"
// run (fresh open_dataset, index loaded from the cache, starting at consumed_samples) continues
// the exact sequence.
TEST(BatchSlice, SamplesMatchAcrossLayoutsAndResume) {
  TempDir dir("layout");
  write_dataset(dir / "ds", 60);
  DataConfig cfg;
  cfg.blend = {{dir / "ds", 1.0}};
  cfg.split = {1, 0, 0};
  const int64_t gbs = 8, steps = 6;
  DatasetRequest req{.seq_length = 16, .seed = 3, .num_samples = gbs * steps, .split = 0};
  auto read_run = [&](int dp, int64_t from_step) {
    auto src = open_dataset(cfg, req, LocalComm());
    std::vector<std::vector<int32_t>> out;
    for (int64_t step = from_step; step < steps; ++step) {
      for (int r = 0; r < dp; ++r) {
        for (int64_t id : dp_batch_slice(step * gbs, gbs, r, dp)) out.push_back(sample(*src, id));
      }
    }
    return out;
  };
  auto full = read_run(1, 0);
  EXPECT_EQ(read_run(2, 0), full);
  EXPECT_EQ(read_run(4, 0), full);
  auto resumed = read_run(2, 3);
  EXPECT_EQ(resumed, std::vector<std::vector<int32_t>>(full.begin() + 3 * gbs, full.end()));
}

}  // namespace
}  // namespace origami
