// Fuzz target: the safetensors reader (src/checkpoint/safetensors.cpp). An input starting with
// '{' is a model.safetensors.index.json, read with read_safetensors_model() from a directory that
// also holds the shards the seed index names (written at start-up by write_safetensors_sharded);
// any other input is one .safetensors file, read with read_safetensors() and its float tensors
// decoded. Seeds: a single file and the shards + index of the same small model.
#include <cmath>

#include "checkpoint/safetensors.h"
#include "fuzz_common.h"

namespace fs = std::filesystem;
using namespace origami;

namespace {

StTensorMap fixture_tensors() {
  auto tensor = [](std::vector<int64_t> shape, const std::string& dtype, float scale) {
    HostTensor h{shape, std::vector<float>(size_t(numel(shape)))};
    for (size_t i = 0; i < h.data.size(); ++i) h.data[i] = scale * float(i) - 1.5f;
    return encode_tensor(h, dtype);
  };
  StTensorMap m;
  m["model.embed_tokens.weight"] = tensor({5, 4}, "BF16", 0.25f);
  m["model.layers.0.mlp.gate.weight"] = tensor({2, 4}, "F32", 0.5f);
  m["model.layers.10.input_layernorm.weight"] = tensor({4}, "F32", 1.f);
  m["model.norm.weight"] = tensor({4}, "BF16", 2.f);
  StTensor ids{"I64", {3}, std::vector<uint8_t>(24, 0)};
  ids.data[8] = 1;
  m["position_ids"] = ids;
  StTensor empty{"F16", {0, 3}, {}};
  m["empty"] = empty;
  // An empty F32 tensor goes through encode_tensor's and decode_tensor's memcpy paths (a 2026-12-06
  // finding: memcpy from a null data() even for 0 bytes).
  m["empty_f32"] = encode_tensor(HostTensor{{2, 0}, {}}, "F32");
  return m;
}

const fs::path& model_dir() {
  static const fs::path dir = fuzz::scratch_dir() / "model";
  return dir;
}

void decode_all(const StFile& f) {
  for (const auto& [name, t] : f.tensors) {
    if (t.dtype != "F32" && t.dtype != "BF16" && t.dtype != "F16") continue;
    const HostTensor h = decode_tensor(t, name);
    if (h.shape != t.shape || h.data.size() != size_t(numel(t.shape)))
      fuzz::finding("decode_tensor", "tensor '" + name + "' decodes to the wrong size");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const StTensorMap tensors = fixture_tensors();
  // 64-byte shards: three files and an index, so the index input has real shards to name.
  write_safetensors_sharded(model_dir().string(), tensors, 64, {{"origin", "origami fuzz"}});
  if (fuzz::seed_dir()) {
    const fs::path single = fuzz::scratch_dir() / "single.safetensors";
    write_safetensors(single.string(), tensors);
    fuzz::copy_seed(single, "single.safetensors");
    fuzz::copy_seed(model_dir() / "model.safetensors.index.json", "model.safetensors.index.json");
    for (const auto& e : fs::directory_iterator(model_dir()))
      if (e.path().extension() == ".safetensors") fuzz::copy_seed(e.path(), e.path().filename());
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::set_input(data, size);
  if (size > 0 && data[0] == '{') {
    fuzz::write_file(model_dir() / "model.safetensors.index.json", data, size);
    fuzz::expect_clean("read_safetensors_model (index)",
                       [&] { decode_all(read_safetensors_model(model_dir().string())); });
  } else {
    static const fs::path path = fuzz::scratch_dir() / "input.safetensors";
    fuzz::write_file(path, data, size);
    fuzz::expect_clean("read_safetensors", [&] { decode_all(read_safetensors(path.string())); });
  }
  return 0;
}
