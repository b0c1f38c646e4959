// defines: CheckpointIndex, CheckpointPiece, read_checkpoint_index()
// A checkpoint's index.json read once and checked whole (docs/checkpoints.md, "index.json"):
// every field present with its type, every piece's box of the tensor's rank and inside its
// global shape, every file a plain name inside the checkpoint directory that exists. Readers
// (load_checkpoint, the origami-ckpt tools) work on this struct, so a structurally wrong index
// is one Error naming the file and the field, before any weight is read.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace origami {

struct CheckpointPiece {
  std::string file;       // path of the HDF5 file (checkpoint directory + the index's name)
  std::string dataset;    // dataset name under kind/ ("name", or "name@k" for a rank's k-th box)
  std::vector<int64_t> offsets, shape;  // the box in global coordinates
  std::array<uint64_t, 3> checksum{};   // model, exp_avg, exp_avg_sq
};

struct CheckpointTensor {
  std::vector<int64_t> global_shape;
  std::vector<CheckpointPiece> pieces;
};

struct CheckpointBufferEntry {
  std::string file;
  std::vector<int64_t> shape;
  uint64_t checksum = 0;
};

struct CheckpointIndex {
  std::string dir;       // the iter_* directory
  int64_t format_version = 0;
  int64_t step = 0, consumed_samples = 0, skipped = 0, optimizer_steps = 0, world_size = 0;
  std::string config_yaml;
  std::map<std::string, CheckpointTensor> tensors;
  std::map<std::string, CheckpointBufferEntry> buffers;
};

// Reads and checks <dir>/index.json (dir: a resolved iter_* directory). readable_version: the
// newest format this build reads.
CheckpointIndex read_checkpoint_index(const std::string& dir, int64_t readable_version);

}  // namespace origami
