#include "checkpoint/hf_tensor_map.h"

#include <filesystem>
#include <fstream>

namespace origami {

namespace fs = std::filesystem;

void write_hf_directory(const std::string& dir, const StTensorMap& tensors,
                        const nlohmann::json& config, uint64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "export: cannot create directory '{}': {}", dir, ec.message());
  write_safetensors_sharded(dir, tensors, max_shard_bytes);
  const std::string path = (fs::path(dir) / "config.json").string();
  std::ofstream out(path, std::ios::trunc);
  out << config.dump(2) << "\n";
  out.flush();
  check(bool(out), "export: writing '{}' failed", path);
}

std::pair<nlohmann::json, std::string> read_hf_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  std::ifstream in(path);
  check(bool(in), "import: cannot open '{}'", path);
  try {
    return {nlohmann::json::parse(in), path};
  } catch (const nlohmann::json::exception& e) {
    fail("import: '{}' is not valid JSON: {}", path, e.what());
  }
}

}  // namespace origami
