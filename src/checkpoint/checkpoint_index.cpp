// read_checkpoint_index(): index.json through JsonField, every structural rule checked once.
#include "checkpoint/checkpoint_index.h"

#include <filesystem>

#include "base/error.h"
#include "base/json_field.h"
#include "tensor/tensor.h"

namespace origami {

namespace fs = std::filesystem;

namespace {

const char* kKindNames[3] = {"model", "exp_avg", "exp_avg_sq"};

// A file named by the index: a plain name inside the checkpoint directory that exists.
std::string checked_file(const JsonField& f, const std::string& dir) {
  const std::string name = f.str();
  check(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
        "{}: '{}' is not a file name inside the checkpoint directory", f.where(), name);
  const fs::path p = fs::path(dir) / name;
  check(fs::is_regular_file(p), "{}: names '{}', which does not exist in '{}'", f.where(), name,
        dir);
  return p.string();
}

std::vector<int64_t> checked_shape(const JsonField& f, bool allow_zero) {
  const std::vector<int64_t> s = f.i64s();
  for (int64_t d : s)
    check(d > 0 || (allow_zero && d == 0), "{}: dimension {} is not positive", f.where(), d);
  return s;
}

}  // namespace

CheckpointIndex read_checkpoint_index(const std::string& dir, int64_t readable_version) {
  const std::string file = (fs::path(dir) / "index.json").string();
  const nlohmann::json doc = read_json_file(file, "checkpoint index");
  const JsonField root(doc, file);
  check(root.is_object(), "{}: expected an object at the top, found {}", file, root.type());
  CheckpointIndex ix;
  ix.dir = dir;
  ix.format_version = root.at("format_version").i64();
  check(ix.format_version >= 1 && ix.format_version <= readable_version,
        "checkpoint '{}': format version {} is not readable by this build (reads 1..{}); a newer "
        "Origami wrote it", dir, ix.format_version, readable_version);
  ix.step = root.at("step").i64();
  ix.consumed_samples = root.at("consumed_samples").i64();
  ix.skipped = root.at("skipped_iterations").i64();
  ix.optimizer_steps = root.at("optimizer_steps").i64();
  ix.world_size = root.at("world_size").i64();
  for (int64_t v : {ix.step, ix.consumed_samples, ix.skipped, ix.optimizer_steps})
    check(v >= 0, "{}: a negative count ({})", file, v);
  check(ix.world_size >= 1, "{}: field 'world_size' is {}, expected >= 1", file, ix.world_size);
  ix.config_yaml = root.at("config").str();
  root.at("tensors").for_each_member([&](const std::string& name, const JsonField& t) {
    CheckpointTensor& tensor = ix.tensors[name];
    tensor.global_shape = checked_shape(t.at("global_shape"), /*allow_zero=*/false);
    const size_t rank = tensor.global_shape.size();
    t.at("pieces").for_each_element([&](const JsonField& p) {
      CheckpointPiece piece;
      piece.file = checked_file(p.at("file"), dir);
      piece.dataset = p.find("dataset") ? p.at("dataset").str() : name;
      piece.offsets = p.at("offsets").i64s();
      piece.shape = checked_shape(p.at("shape"), /*allow_zero=*/false);
      check(piece.offsets.size() == rank && piece.shape.size() == rank,
            "{}: offsets {} and shape {} must both have the tensor's {} dimensions (global shape "
            "{})", p.where(), shape_str(piece.offsets), shape_str(piece.shape), rank,
            shape_str(tensor.global_shape));
      for (size_t d = 0; d < rank; ++d)
        check(piece.offsets[d] >= 0 && piece.offsets[d] + piece.shape[d] <= tensor.global_shape[d],
              "{}: the box at offsets {} of shape {} leaves the global shape {} in dimension {}",
              p.where(), shape_str(piece.offsets), shape_str(piece.shape),
              shape_str(tensor.global_shape), d);
      for (int k = 0; k < 3; ++k)
        piece.checksum[size_t(k)] = p.at(std::string("checksum_") + kKindNames[k]).u64();
      tensor.pieces.push_back(std::move(piece));
    });
  });
  if (auto b = root.find("buffers"))
    b->for_each_member([&](const std::string& name, const JsonField& e) {
      CheckpointBufferEntry& entry = ix.buffers[name];
      entry.file = checked_file(e.at("file"), dir);
      entry.shape = checked_shape(e.at("shape"), /*allow_zero=*/true);
      check(entry.shape.size() == 1, "{}: a buffer is one-dimensional, found shape {}",
            e.at("shape").where(), shape_str(entry.shape));
      entry.checksum = e.at("checksum").u64();
    });
  return ix;
}

}  // namespace origami
