// defines: TrainingState, save_checkpoint(), load_checkpoint(), resolve_checkpoint()
// Checkpoints in global coordinates (docs/checkpoints.md): one HDF5 file per writing rank plus
// index.json. Every tensor piece is stored with its global name, global shape and the offsets of
// the box it covers, so a checkpoint written under one layout (DP, EP, ETP, ZeRO on or off) loads
// under any other by intersecting boxes. Saving is atomic (a .tmp directory, verified by
// re-reading every piece against its checksum, renamed, then `latest` updated); loading validates
// every tensor before a single weight is overwritten.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "comm/parallel_layout.h"
#include "model/parameters.h"
#include "optim/optimizer.h"

namespace origami {

// Version 2 adds "buffers" (persistent non-trained state, e.g. the routers' expert bias); a
// checkpoint without buffers is still written as version 1, readable by older builds.
inline constexpr int64_t kCheckpointFormatVersion = 2;

// Replicated non-trained state by global name (MoeTransformer::buffers()): stored once, by rank 0.
using CheckpointBuffers = std::map<std::string, std::vector<float>>;

struct TrainingState {
  int64_t step = 0;              // optimizer steps taken (iterations completed)
  int64_t consumed_samples = 0;  // the data position: the next global batch starts here
  int64_t skipped = 0;           // iterations skipped for a non-finite gradient norm
  int64_t optimizer_steps = 0;   // AdamW's bias-correction count
};

// Where a save reads and a load writes the Adam moments: one range of one parameter at a time,
// so neither needs every moment on the host (ZeRO-1 keeps 1/DP of them on the device).
class MomentAccess {
 public:
  virtual ~MomentAccess() = default;
  // Shards (each rank writes the part it holds) rather than replicas (the first replica writes).
  virtual bool sharded() const = 0;
  virtual std::pair<int64_t, int64_t> held(const Param& p) const = 0;  // p's local flat range
  virtual void read(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const = 0;
  virtual void write(const Param& p, int64_t lo, int64_t hi, const float* m, const float* v) = 0;
};

// The optimizer's own moments (the trainer's saves and loads).
class OptimizerMoments final : public MomentAccess {
 public:
  explicit OptimizerMoments(Optimizer& o) : o_(o) {}
  bool sharded() const override { return o_.shards_moments(); }
  std::pair<int64_t, int64_t> held(const Param& p) const override { return o_.held_moments(p); }
  void read(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const override {
    o_.read_moments(p, lo, hi, m, v);
  }
  void write(const Param& p, int64_t lo, int64_t hi, const float* m, const float* v) override {
    o_.write_moments(p, lo, hi, m, v);
  }

 private:
  Optimizer& o_;
};

// Collective over `world`. moments: the optimizer's, read a piece at a time (the extra host
// memory of a save is one piece, at most 2^17 elements x value, m, v).
// Writes <dir>/iter_<step>, points <dir>/latest at it, keeps the newest keep_last (0 = all).
// Returns the checkpoint's path.
// `be` holds the store's memory (device or host); m and v are host vectors.
std::string save_checkpoint(Backend& be, const std::string& dir, int64_t keep_last,
                            const TrainingState& state,
                            const std::string& config_yaml, const ParamStore& store,
                            const MomentAccess& moments, const ProcessGroups& groups,
                            const Communicator& world, const CheckpointBuffers& buffers = {});
// The same with every moment on the host, laid out like store's value buffer (tools).
std::string save_checkpoint(Backend& be, const std::string& dir, int64_t keep_last,
                            const TrainingState& state,
                            const std::string& config_yaml, const ParamStore& store,
                            const std::vector<float>& m, const std::vector<float>& v,
                            const ProcessGroups& groups, const Communicator& world,
                            const CheckpointBuffers& buffers = {});

// Test seam of save_checkpoint: called on every rank after all rank files of step `step` are
// written and before anything is published (where a kill -9 mid-save leaves a save). Null by
// default; origami-train installs one for the crash-safety test (crash_during_save.sh).
using SaveFaultHook = void (*)(int64_t step, int rank);
void set_save_fault_hook(SaveFaultHook hook);

// A save directory (with `latest`) or one checkpoint directory (with index.json) -> the latter.
std::string resolve_checkpoint(const std::string& path);

// Whether TP rank `tp_rank` of `tp_size` is the first holder of its copy of a dense parameter
// (the one that stores it): always for TP-split ones, TP rank 0 for `tp_replicas: tp`, and for
// `tp_kv` the first of the tp_size x local rows / global rows ranks sharing the kv head.
bool first_tp_holder(const ParamSpec& spec, int tp_rank, int tp_size);

// Fills store values and m / v (resized like the store) for this rank's shards from a
// checkpoint saved under any layout, after validating version, names, shapes, coverage and
// checksums (an Error names the checkpoint, the tensor and the mismatch; nothing is overwritten).
// buffers (optional): receives every buffer the checkpoint holds (checksums verified).
// whole_model: under pipeline parallelism, the names of every stage's parameters (this rank's
// store holds its stage's only); a checkpoint tensor outside them is an Error. Null: the store.
// moments: where each parameter's held moments go (a parameter at a time: the extra host memory
// of a load is one parameter's values and held moments, plus one piece being read).
TrainingState load_checkpoint(Backend& be, const std::string& path, ParamStore& store,
                              MomentAccess& moments, CheckpointBuffers* buffers = nullptr,
                              const std::set<std::string>* whole_model = nullptr);
// The same into host vectors laid out like the store's value buffer (resized; tools).
TrainingState load_checkpoint(Backend& be, const std::string& path, ParamStore& store,
                              std::vector<float>& m, std::vector<float>& v,
                              CheckpointBuffers* buffers = nullptr,
                              const std::set<std::string>* whole_model = nullptr);
CheckpointBuffers read_checkpoint_buffers(const std::string& path);
// Runs `read` on every rank of `world` (rank-local work: no collective inside); when it throws an
// Error on any rank, every rank fails with `what` and every failing rank's reason, so each
// rank's log says why and none is left waiting (a load each rank does alone, like a resume).
void read_on_every_rank(const Communicator& world, const std::string& what,
                        const std::function<void()>& read);

// Tools (origami-ckpt): the checkpoint's metadata, and whole global tensors assembled from the
// pieces of every rank (kind: "model", "exp_avg" or "exp_avg_sq"), checksums verified.
struct CheckpointInfo {
  std::string path;                 // the resolved iter_* directory
  int64_t format_version = 0;
  TrainingState state;
  int64_t world_size = 0;
  std::string config_yaml;
  std::map<std::string, std::vector<int64_t>> shapes;  // tensor -> global shape
};
CheckpointInfo read_checkpoint_info(const std::string& path);
using GlobalTensors = std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>;
GlobalTensors read_checkpoint_tensors(const std::string& path, const std::string& kind = "model");

// Offline (one process): writes a checkpoint laid out for another layout, given for each of its
// ranks the specs of the pieces that rank would write (its first-replica parameters).
std::string write_checkpoint_for_layout(
    const std::string& dir, const TrainingState& state, const std::string& config_yaml,
    const std::vector<std::vector<ParamSpec>>& rank_specs, const GlobalTensors& model,
    const GlobalTensors& exp_avg, const GlobalTensors& exp_avg_sq,
    const CheckpointBuffers& buffers = {});

}  // namespace origami
