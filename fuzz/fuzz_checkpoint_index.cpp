// Fuzz target: the checkpoint index reader (src/checkpoint/checkpoint.cpp), the index.json that
// origami-train's checkpoint.load and every origami-ckpt subcommand read. At start-up a real
// two-rank checkpoint of a tiny model is written by write_checkpoint_for_layout() (rank files,
// buffers, index.json); each input replaces its index.json, and the four readers run on it:
// read_checkpoint_info, read_checkpoint_tensors, read_checkpoint_buffers and load_checkpoint into
// a CPU-backend ParamStore holding rank 1's box of the split tensor. Seed: that index.json.
#include "backend/cpu/cpu_backend.h"
#include "checkpoint/checkpoint.h"
#include "fuzz_common.h"

namespace fs = std::filesystem;
using namespace origami;

namespace {

ParamSpec spec(std::string name, std::vector<int64_t> global, std::vector<int64_t> local,
               int64_t row_offset) {
  ParamSpec s{.name = std::move(name), .global_shape = std::move(global),
              .local_shape = std::move(local)};
  if (s.local_shape != s.global_shape)
    s.shard.dims.push_back({.dim = 0, .group = "ep", .offset = row_offset});
  return s;
}

GlobalTensors values(float scale) {
  GlobalTensors t;
  auto fill = [&](const std::string& name, std::vector<int64_t> shape) {
    std::vector<float> v(size_t(numel_of(shape)));
    for (size_t i = 0; i < v.size(); ++i) v[i] = scale * (float(i) + 0.5f);
    t[name] = {std::move(shape), std::move(v)};
  };
  fill("layers.0.moe.experts.fc1.weight", {4, 3});
  fill("final_norm.weight", {3});
  return t;
}

// The checkpoint directory (iter_0000007), written once.
const fs::path& checkpoint() {
  static const fs::path dir = [] {
    const std::vector<std::vector<ParamSpec>> ranks = {
        {spec("layers.0.moe.experts.fc1.weight", {4, 3}, {2, 3}, 0),
         spec("final_norm.weight", {3}, {3}, 0)},
        {spec("layers.0.moe.experts.fc1.weight", {4, 3}, {2, 3}, 2)}};
    const TrainingState state{.step = 7, .consumed_samples = 56, .skipped = 1,
                              .optimizer_steps = 6};
    return fs::path(write_checkpoint_for_layout(
        (fuzz::scratch_dir() / "save").string(), state, "model:\n  num_layers: 1\n", ranks,
        values(1.f), values(0.25f), values(0.0625f),
        {{"layers.0.moe.router.expert_bias", {0.5f, -0.5f}}}));
  }();
  return dir;
}

// This run's model as rank 1 of the writing layout holds it.
struct Rank1 {
  std::unique_ptr<Backend> be = make_cpu_backend();
  ParamStore store;
  Rank1() {
    store.declare(spec("layers.0.moe.experts.fc1.weight", {4, 3}, {2, 3}, 2));
    store.declare(spec("final_norm.weight", {3}, {3}, 0));
    store.finalize(*be, 1234);
  }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  checkpoint();
  if (fuzz::seed_dir()) {
    fuzz::copy_seed(checkpoint() / "index.json", "index.json");
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::set_input(data, size);
  static Rank1 rank1;
  const std::string dir = checkpoint().string();
  fuzz::write_file(checkpoint() / "index.json", data, size);
  fuzz::expect_clean("read_checkpoint_info", [&] { read_checkpoint_info(dir); });
  fuzz::expect_clean("read_checkpoint_tensors", [&] { read_checkpoint_tensors(dir, "model"); });
  fuzz::expect_clean("read_checkpoint_buffers", [&] { read_checkpoint_buffers(dir); });
  fuzz::expect_clean("load_checkpoint", [&] {
    std::vector<float> m, v;
    CheckpointBuffers buffers;
    load_checkpoint(*rank1.be, dir, rank1.store, m, v, &buffers);
  });
  return 0;
}
