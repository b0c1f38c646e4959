// Saving and loading checkpoints in global coordinates: each rank writes its pieces, rank 0
// publishes index.json and `latest` only once every rank has succeeded (atomic, keep_last).
#include "checkpoint/checkpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/rng.h"
#include "checkpoint/checkpoint_index.h"
#include "checkpoint/hdf5_file.h"

namespace origami {

namespace {
SaveFaultHook g_save_fault_hook = nullptr;  // tests only (set_save_fault_hook)
}  // namespace

void set_save_fault_hook(SaveFaultHook hook) { g_save_fault_hook = hook; }


namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kKinds[3] = {"model", "exp_avg", "exp_avg_sq"};

uint64_t checksum(const float* data, int64_t n) {
  return hash_name(std::string_view(reinterpret_cast<const char*>(data), size_t(n) * sizeof(float)));
}

std::vector<int64_t> offsets_of(const ParamSpec& s) {
  std::vector<int64_t> o(s.global_shape.size());
  for (size_t d = 0; d < o.size(); ++d) o[d] = s.shard.offset_along(int(d));
  return o;
}

// Copies the intersection of box `src` (offsets so, shape ss, data sd) into box `dst` (offsets
// do_, shape ds, data dd), both row-major in global coordinates. Returns elements copied.
int64_t copy_intersection(const std::vector<int64_t>& so, const std::vector<int64_t>& ss,
                          const float* sd, const std::vector<int64_t>& do_,
                          const std::vector<int64_t>& ds, float* dd) {
  const size_t nd = ss.size();
  std::vector<int64_t> lo(nd), hi(nd);
  for (size_t d = 0; d < nd; ++d) {
    lo[d] = std::max(so[d], do_[d]);
    hi[d] = std::min(so[d] + ss[d], do_[d] + ds[d]);
    if (lo[d] >= hi[d]) return 0;
  }
  int64_t copied = 0;
  std::vector<int64_t> idx(lo);  // odometer over all dims but the last
  const int64_t run = hi[nd - 1] - lo[nd - 1];
  while (true) {
    int64_t s_off = 0, d_off = 0;
    for (size_t d = 0; d < nd; ++d) {
      s_off = s_off * ss[d] + (idx[d] - so[d]);
      d_off = d_off * ds[d] + (idx[d] - do_[d]);
    }
    std::copy(sd + s_off, sd + s_off + run, dd + d_off);
    copied += run;
    int d = int(nd) - 2;  // advance the odometer over the leading dims
    for (; d >= 0; --d) {
      if (++idx[size_t(d)] < hi[size_t(d)]) break;
      idx[size_t(d)] = lo[size_t(d)];
    }
    if (d < 0) break;
  }
  return copied;
}

// Pieces hold at most this many elements, so a save stages one bounded piece at a time.
constexpr int64_t kPieceElements = int64_t(1) << 17;

// A box of a row-major tensor that is one contiguous run of its flat elements.
struct FlatBox {
  std::vector<int64_t> offsets, shape;
  int64_t flat = 0;  // first flat element
  int64_t numel() const { return numel_of(shape); }
};

// The flat range [lo, hi) of a row-major `shape` as boxes, each contiguous and at most `cap`
// elements: the partial leading row, the whole rows, the partial trailing row, recursively.
void flat_boxes_into(const std::vector<int64_t>& shape, size_t dim, std::vector<int64_t> prefix,
                     int64_t base, int64_t lo, int64_t hi, std::vector<FlatBox>& out) {
  if (lo >= hi) return;
  const size_t nd = shape.size();
  int64_t row = 1;
  for (size_t d = dim + 1; d < nd; ++d) row *= shape[d];
  auto box = [&](int64_t first, int64_t count) {  // rows [first, first+count) of dim, whole below
    FlatBox b;
    b.offsets = prefix;
    b.offsets.push_back(first);
    b.shape.assign(dim, 1);
    b.shape.push_back(count);
    for (size_t d = dim + 1; d < nd; ++d) b.offsets.push_back(0), b.shape.push_back(shape[d]);
    b.flat = base + first * row;
    out.push_back(std::move(b));
  };
  int64_t r0 = lo / row;
  const int64_t r1 = hi / row;
  if (lo % row != 0 || (r0 == r1)) {  // a partial row: recurse into it
    std::vector<int64_t> p = prefix;
    p.push_back(r0);
    const int64_t end = r0 == r1 ? hi % row : row;
    if (dim + 1 < nd) flat_boxes_into(shape, dim + 1, p, base + r0 * row, lo % row, end, out);
    if (r0 == r1) return;
    ++r0;
  }
  if (r1 > r0) box(r0, r1 - r0);
  if (hi % row != 0 && dim + 1 < nd) {
    std::vector<int64_t> p = prefix;
    p.push_back(r1);
    flat_boxes_into(shape, dim + 1, p, base + r1 * row, 0, hi % row, out);
  }
}

std::vector<FlatBox> flat_boxes(const std::vector<int64_t>& shape, int64_t lo, int64_t hi,
                                int64_t cap) {
  std::vector<FlatBox> out;
  for (int64_t a = lo; a < hi; a += cap) flat_boxes_into(shape, 0, {}, 0, a, std::min(hi, a + cap), out);
  // Whole rows over `cap` (a chunk boundary inside a row run is handled by the chunking above;
  // a box of whole rows within one chunk is at most cap elements).
  return out;
}

std::string iter_name(int64_t step) { return fmt::format("iter_{:07d}", step); }

// Everyone learns whether every rank succeeded and, if not, every failing rank's reason: all
// ranks then fail with the same message (so rank 0's log and the failing rank's both say why).
// cleanup runs on rank 0 first (the half-written .tmp directory goes).
void agree(const Communicator& world, const std::string& error, const std::string& what,
           const std::function<void()>& cleanup = {}) {
  if (world.allreduce_scalar<int32_t>(error.empty() ? 1 : 0, ReduceOp::min)) return;
  const int64_t len = int64_t(error.size());
  std::vector<int64_t> lens(size_t(world.size())), displs(size_t(world.size()), 0);
  world.allgather(&len, lens.data(), 1, CommDType::i64);
  for (size_t r = 1; r < lens.size(); ++r) displs[r] = displs[r - 1] + lens[r - 1];
  std::string all(size_t(displs.back() + lens.back()), '\0');
  world.allgatherv(error.data(), len, all.data(), lens, displs, CommDType::u8);
  std::string reasons;
  for (size_t r = 0; r < lens.size(); ++r)
    if (lens[r] > 0)
      reasons += fmt::format("\n  rank {}: {}", r, all.substr(size_t(displs[r]), size_t(lens[r])));
  if (world.rank() == 0 && cleanup) cleanup();
  fail("{}{}", what, reasons);
}

// The checkpoint `latest` names now, for messages ("none" before the first save).
std::string latest_of(const std::string& dir) {
  std::string name;
  std::ifstream(fs::path(dir) / "latest") >> name;
  return name.empty() ? "none yet" : name;
}

// Writes a small text file whole, checked: a full disk or a read-only file system is an Error
// with the OS reason.
void write_text(const fs::path& path, const std::string& text) {
  errno = 0;
  std::ofstream out(path);
  out << text;
  out.flush();
  const bool ok = out.good();
  out.close();
  check(ok && !out.fail(), "cannot write '{}': {}", path.string(),
        errno ? std::strerror(errno) : "stream error");
}

json index_header(const TrainingState& state, int64_t world_size, const std::string& config_yaml,
                  bool has_buffers) {
  return json{{"format_version", has_buffers ? kCheckpointFormatVersion : int64_t(1)},
              {"step", state.step},
              {"consumed_samples", state.consumed_samples},
              {"skipped_iterations", state.skipped},
              {"optimizer_steps", state.optimizer_steps},
              {"world_size", world_size},
              {"config", config_yaml},
              {"tensors", json::object()}};
}

// The last, single-writer part of a save: index.json into the .tmp directory, rename it to its
// final name, point `latest` at it (write + rename: atomic), drop checkpoints beyond keep_last.
void publish(const std::string& dir, const fs::path& tmp_dir, const fs::path& final_dir,
             const json& index, int64_t step, int64_t keep_last) {
  const fs::path index_tmp = tmp_dir / "index.json.tmp";
  write_text(index_tmp, index.dump(1) + "\n");
  fs::rename(index_tmp, tmp_dir / "index.json");
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  const fs::path latest_tmp = fs::path(dir) / "latest.tmp";
  write_text(latest_tmp, iter_name(step) + "\n");
  fs::rename(latest_tmp, fs::path(dir) / "latest");
  std::vector<fs::path> saved;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().starts_with("iter_") &&
        e.path().extension() != ".tmp")
      saved.push_back(e.path());
  std::sort(saved.begin(), saved.end());
  if (keep_last > 0)
    for (size_t i = 0; i + size_t(keep_last) < saved.size(); ++i) fs::remove_all(saved[i]);
}

// Writes every buffer into `f` as buffers/<name> and returns their index entries.
json write_buffers(Hdf5File& f, const std::string& file, const CheckpointBuffers& buffers) {
  json out = json::object();
  for (const auto& [name, values] : buffers) {
    const std::vector<int64_t> shape{int64_t(values.size())};
    f.write("buffers/" + name, shape, values.data());
    out[name] = {{"file", file}, {"shape", shape},
                 {"checksum", checksum(values.data(), int64_t(values.size()))}};
  }
  return out;
}

// The rank file `path` from a cache of open files; only_one: close the others first (HDF5 keeps
// caches per open file, and a ZeRO-1 load reads pieces of every rank's file).
Hdf5File& open_cached(std::map<std::string, Hdf5File>& files, const std::string& path,
                      bool only_one = false) {
  auto it = files.find(path);
  if (it != files.end()) return it->second;
  if (only_one) files.clear();
  return files.emplace(path, Hdf5File::open_read(path)).first->second;
}

// Dataset `ds` of a piece, checked against the index: present, of the piece's shape, and with
// the checksum the index holds for it (an Error names the checkpoint, the file and the dataset).
std::vector<float> read_checked_piece(Hdf5File& f, const std::string& path,
                                      const CheckpointPiece& piece, const std::string& ds,
                                      uint64_t expected_checksum) {
  check(f.has(ds), "checkpoint '{}': {} has no dataset '{}'", path, piece.file, ds);
  check(f.shape(ds) == piece.shape, "checkpoint '{}': dataset '{}' in {} has shape {}, its index "
        "says {}", path, ds, piece.file, shape_str(f.shape(ds)), shape_str(piece.shape));
  auto data = f.read(ds);
  check(checksum(data.data(), int64_t(data.size())) == expected_checksum,
        "checkpoint '{}': dataset '{}' in {} fails its checksum (corrupted file)", path, ds,
        piece.file);
  return data;
}

CheckpointBuffers read_buffers(const std::string& path,
                               const std::map<std::string, CheckpointBufferEntry>& entries,
                               std::map<std::string, Hdf5File>& files) {
  CheckpointBuffers out;
  for (const auto& [name, entry] : entries) {
    Hdf5File& f = open_cached(files, entry.file);
    const std::string ds = "buffers/" + name;
    check(f.has(ds), "checkpoint '{}': {} has no dataset '{}'", path, entry.file, ds);
    auto data = f.read(ds);
    check(int64_t(data.size()) == entry.shape.at(0), "checkpoint '{}': buffer '{}' has {} values, "
          "its index says {}", path, name, data.size(), entry.shape.at(0));
    check(checksum(data.data(), int64_t(data.size())) == entry.checksum,
          "checkpoint '{}': dataset '{}' in {} fails its checksum (corrupted file)", path, ds,
          entry.file);
    out[name] = std::move(data);
  }
  return out;
}

}  // namespace

namespace {

// Moments in host vectors laid out like the store's value buffer (every rank holds all of its).
class HostMoments final : public MomentAccess {
 public:
  HostMoments(const ParamStore& store, const float* m, const float* v, float* m_out = nullptr,
              float* v_out = nullptr)
      : base_(store.all_values().data()), m_(m), v_(v), m_out_(m_out), v_out_(v_out) {}
  bool sharded() const override { return false; }
  std::pair<int64_t, int64_t> held(const Param& p) const override { return {0, p.value.numel()}; }
  void read(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const override {
    const int64_t off = p.value.data() - base_;
    std::copy(m_ + off + lo, m_ + off + hi, m);
    std::copy(v_ + off + lo, v_ + off + hi, v);
  }
  void write(const Param& p, int64_t lo, int64_t hi, const float* m, const float* v) override {
    const int64_t off = p.value.data() - base_;
    std::copy(m, m + (hi - lo), m_out_ + off + lo);
    std::copy(v, v + (hi - lo), v_out_ + off + lo);
  }

 private:
  const float* base_;
  const float *m_, *v_;
  float *m_out_, *v_out_;
};

}  // namespace

std::string save_checkpoint(Backend& be, const std::string& dir, int64_t keep_last,
                            const TrainingState& state,
                            const std::string& config_yaml, const ParamStore& store,
                            const std::vector<float>& m, const std::vector<float>& v,
                            const ProcessGroups& groups, const Communicator& world,
                            const CheckpointBuffers& buffers) {
  check(int64_t(m.size()) == store.count() && int64_t(v.size()) == store.count(),
        "save_checkpoint: {} / {} moments for {} parameters", m.size(), v.size(), store.count());
  const HostMoments host(store, m.data(), v.data());
  return save_checkpoint(be, dir, keep_last, state, config_yaml, store, host, groups, world,
                         buffers);
}

std::string save_checkpoint(Backend& be, const std::string& dir, int64_t keep_last,
                            const TrainingState& state,
                            const std::string& config_yaml, const ParamStore& store,
                            const MomentAccess& moments, const ProcessGroups& groups,
                            const Communicator& world, const CheckpointBuffers& buffers) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path final_dir = fs::path(dir) / iter_name(state.step);
  const fs::path tmp_dir = fs::path(dir) / (iter_name(state.step) + ".tmp");
  std::string error;
  const std::string before = world.rank() == 0 ? latest_of(dir) : std::string();
  const std::string failed = fmt::format("checkpoint save to '{}' failed (the previous checkpoint "
                                         "is untouched; latest: {}):", dir,
                                         world.rank() == 0 ? before : "see rank 0");
  auto drop_tmp = [&] {
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);  // best effort: a read-only or full file system may refuse
  };
  if (world.rank() == 0) {
    std::error_code ec;
    if (!fs::create_directories(dir, ec) && ec)
      error = fmt::format("cannot create '{}': {}", dir, ec.message());
    else if (fs::remove_all(tmp_dir, ec), ec)
      error = fmt::format("cannot clear '{}': {}", tmp_dir.string(), ec.message());
    else if (fs::create_directory(tmp_dir, ec); ec)
      error = fmt::format("cannot create '{}': {}", tmp_dir.string(), ec.message());
  }
  agree(world, error, failed, drop_tmp);

  // 1. Each rank writes the pieces it is the first holder of (replicas are not stored twice):
  //    dense parameters from DP x CP rank 0 (TP-replicated ones from their first TP holder as
  //    well), expert parameters from EDP rank 0 (FSSDP: from their owner).
  json pieces = json::array();
  json buffer_index = json::object();
  const std::string file = fmt::format("rank_{:05d}.h5", world.rank());
  try {
    // What this rank writes of each parameter: a flat range of its local elements. Replicated
    // moments (AdamW): the first replica writes all of it. Sharded moments (ZeRO-1): every
    // rank writes the part it holds. Both: only the first TP holder of a TP-replicated
    // parameter, never the last stage's copy of a tied embedding (the first stage stores it).
    std::vector<std::tuple<const Param*, int64_t, int64_t>> mine;
    for (const Param& p : store.all()) {
      const Communicator& replicas =
          p.spec.grad_group == GradGroup::dense ? *groups.dp_cp : *groups.edp;
      const bool tp_first = p.spec.grad_group == GradGroup::expert ||
                            first_tp_holder(p.spec, groups.tp->rank(), groups.tp->size());
      if (!tp_first || p.spec.pipeline_copy) continue;
      std::pair<int64_t, int64_t> range{0, 0};
      if (moments.sharded())
        range = moments.held(p);
      else if (replicas.rank() == 0 || p.spec.owned_once())  // FSSDP's experts: their owner
        range = {0, p.value.numel()};
      if (range.first < range.second) mine.emplace_back(&p, range.first, range.second);
    }
    // Replicated over the stage: its first rank writes its layers' buffers, once.
    const bool writes_buffers = groups.stage->rank() == 0 && !buffers.empty();
    if (!mine.empty() || writes_buffers) {
      {
        Hdf5File f = Hdf5File::create((tmp_dir / file).string());
        if (writes_buffers) buffer_index = write_buffers(f, file, buffers);
        std::map<std::string, int> written;  // pieces of one name in this file so far
        std::vector<float> host[3];  // one piece's values and moments: <= kPieceElements each
        for (const auto& [p, lo, hi] : mine)
          for (const FlatBox& box : flat_boxes(p->spec.local_shape, lo, hi, kPieceElements)) {
            std::vector<int64_t> at = offsets_of(p->spec);
            for (size_t d = 0; d < at.size(); ++d) at[d] += box.offsets[d];
            json piece{{"name", p->spec.name}, {"file", file}, {"offsets", at},
                       {"shape", box.shape}, {"global_shape", p->spec.global_shape}};
            // A rank may write several boxes of a tensor (FSSDP's experts, ZeRO-1's shard
            // pieces): the second and later get their own dataset names.
            const int nth = written[p->spec.name]++;
            const std::string key = nth == 0 ? p->spec.name : fmt::format("{}@{}", p->spec.name, nth);
            if (nth > 0) piece["dataset"] = key;
            const int64_t n = box.numel();
            for (auto& h : host) h.resize(size_t(n));
            be.copy_to_host(host[0].data(), p->value.data() + box.flat, size_t(n) * sizeof(float));
            moments.read(*p, box.flat, box.flat + n, host[1].data(), host[2].data());
            for (int k = 0; k < 3; ++k) {
              const std::string ds = std::string(kKinds[k]) + "/" + key;
              f.write(ds, box.shape, host[k].data());
              f.set_attribute(ds, "offsets", at);
              f.set_attribute(ds, "global_shape", p->spec.global_shape);
              piece[std::string("checksum_") + kKinds[k]] = checksum(host[k].data(), n);
            }
            pieces.push_back(piece);
          }
        f.close();  // checked: the last writes may only fail here (a full disk)
      }
      // 2. Verify: read every piece back and compare its checksum before the save counts.
      Hdf5File f = Hdf5File::open_read((tmp_dir / file).string());
      std::map<std::string, Hdf5File> reread;
      if (writes_buffers) {  // verifies what was just written
        std::map<std::string, CheckpointBufferEntry> entries;
        for (auto it = buffer_index.begin(); it != buffer_index.end(); ++it)
          entries[it.key()] = {.file = (tmp_dir / file).string(),
                               .shape = it.value()["shape"].get<std::vector<int64_t>>(),
                               .checksum = it.value()["checksum"].get<uint64_t>()};
        read_buffers(tmp_dir.string(), entries, reread);
      }
      for (const auto& piece : pieces)
        for (int k = 0; k < 3; ++k) {
          const auto data = f.read(std::string(kKinds[k]) + "/" +
                                   piece.value("dataset", piece["name"].get<std::string>()));
          check(checksum(data.data(), int64_t(data.size())) ==
                    piece[std::string("checksum_") + kKinds[k]].get<uint64_t>(),
                "{}: '{}' reads back different from what was written", file,
                piece["name"].get<std::string>());
        }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(world, error, failed, drop_tmp);

  // Every rank file written, nothing published: the test seam's point (set_save_fault_hook).
  if (g_save_fault_hook) g_save_fault_hook(state.step, world.rank());

  // 3. Rank 0 gathers the piece lists (and the buffer entries: each pipeline stage writes its own
  //    layers') into index.json, then publishes the checkpoint.
  const std::string mine = json{{"pieces", pieces}, {"buffers", buffer_index}}.dump();
  const int64_t len = int64_t(mine.size());
  std::vector<int64_t> lens(size_t(world.size())), displs(size_t(world.size()), 0);
  world.allgather(&len, lens.data(), 1, CommDType::i64);
  for (size_t r = 1; r < lens.size(); ++r) displs[r] = displs[r - 1] + lens[r - 1];
  std::string all(size_t(displs.back() + lens.back()), '\0');
  world.allgatherv(mine.data(), len, all.data(), lens, displs, CommDType::u8);
  if (world.rank() == 0) {
    try {
      json all_buffers = json::object();
      std::vector<json> rank_pieces;
      for (size_t r = 0; r < lens.size(); ++r) {
        json part = json::parse(all.substr(size_t(displs[r]), size_t(lens[r])));
        if (part["buffers"].is_object()) all_buffers.update(part["buffers"]);
        rank_pieces.push_back(std::move(part["pieces"]));
      }
      json index = index_header(state, world.size(), config_yaml, !all_buffers.empty());
      if (!all_buffers.empty()) index["buffers"] = all_buffers;
      for (auto& pieces_of_rank : rank_pieces)
        for (auto& piece : pieces_of_rank) {
          auto& t = index["tensors"][piece["name"].get<std::string>()];
          t["global_shape"] = piece["global_shape"];
          piece.erase("global_shape");
          t["pieces"].push_back(piece);
        }
      publish(dir, tmp_dir, final_dir, index, state.step, keep_last);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  agree(world, error, failed, drop_tmp);
  if (world.rank() == 0) {
    uintmax_t bytes = 0;
    for (const auto& e : fs::directory_iterator(final_dir)) bytes += e.file_size();
    spdlog::info("saved checkpoint {} ({:.1f} MiB) in {:.2f} s", final_dir.string(),
                 double(bytes) / (1 << 20),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return final_dir.string();
}

bool first_tp_holder(const ParamSpec& spec, int tp_rank, int tp_size) {
  if (spec.tp_replicas == "tp") return tp_rank == 0;
  if (spec.tp_replicas != "tp_kv") return true;
  const int64_t share = int64_t(tp_size) * spec.local_shape.at(0) / spec.global_shape.at(0);
  return tp_rank % std::max<int64_t>(share, 1) == 0;
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "index.json")) return path;
  if (fs::exists(p / "latest")) {
    std::string name;
    std::ifstream(p / "latest") >> name;
    check(!name.empty() && fs::exists(p / name / "index.json"),
          "checkpoint.load: '{}/latest' names '{}', which is not a complete checkpoint", path, name);
    return (p / name).string();
  }
  fail("checkpoint.load: '{}' is neither a checkpoint (no index.json) nor a save directory (no "
       "'latest')", path);
}

namespace {

bool boxes_overlap(const std::vector<int64_t>& ao, const std::vector<int64_t>& as,
                   const std::vector<int64_t>& bo, const std::vector<int64_t>& bs) {
  for (size_t d = 0; d < ao.size(); ++d)
    if (!(ao[d] < bo[d] + bs[d] && bo[d] < ao[d] + as[d])) return false;
  return true;
}

int64_t overlap_volume(const std::vector<int64_t>& ao, const std::vector<int64_t>& as,
                       const std::vector<int64_t>& bo, const std::vector<int64_t>& bs) {
  int64_t n = 1;
  for (size_t d = 0; d < ao.size(); ++d)
    n *= std::max<int64_t>(0, std::min(ao[d] + as[d], bo[d] + bs[d]) - std::max(ao[d], bo[d]));
  return n;
}

}  // namespace

TrainingState load_checkpoint(Backend& be, const std::string& path_in, ParamStore& store,
                              std::vector<float>& m, std::vector<float>& v,
                              CheckpointBuffers* buffers,
                              const std::set<std::string>* whole_model) {
  m.assign(size_t(store.count()), 0.f);
  v.assign(size_t(store.count()), 0.f);
  HostMoments host(store, nullptr, nullptr, m.data(), v.data());
  return load_checkpoint(be, path_in, store, host, buffers, whole_model);
}

TrainingState load_checkpoint(Backend& be, const std::string& path_in, ParamStore& store,
                              MomentAccess& moments, CheckpointBuffers* buffers,
                              const std::set<std::string>* whole_model) {
  const std::string path = resolve_checkpoint(path_in);
  const CheckpointIndex index = read_checkpoint_index(path, kCheckpointFormatVersion);
  const auto& tensors = index.tensors;
  for (const auto& [name, t] : tensors) {
    bool known = whole_model && whole_model->contains(name);
    for (const Param& p : store.all()) known |= p.spec.name == name;
    check(known, "checkpoint '{}': tensor '{}' does not exist in this run's model (the model "
          "config differs: layers, experts, shared expert or tied embeddings)", path, name);
  }
  std::map<std::string, Hdf5File> files;
  auto file_of = [&](const std::string& f) -> Hdf5File& { return open_cached(files, f, true); };
  // The pieces overlapping each of this rank's parameters.
  std::vector<std::vector<const CheckpointPiece*>> pieces_of(store.all().size());

  // Pass 1: validate everything this rank will read (names, shapes, coverage, datasets and their
  // checksums), one dataset in memory at a time; nothing is overwritten until all pass.
  std::set<std::pair<std::string, std::string>> verified;  // (file, dataset)
  for (size_t i = 0; i < store.all().size(); ++i) {
    const Param& p = store.all()[i];
    const std::string& name = p.spec.name;
    auto tit = tensors.find(name);
    check(tit != tensors.end(), "checkpoint '{}': tensor '{}' is missing (the run's model has "
          "it: was the checkpoint written with another model config?)", path, name);
    check(tit->second.global_shape == p.spec.global_shape, "checkpoint '{}': tensor '{}' has "
          "global shape {}, the run's model needs {}", path, name,
          shape_str(tit->second.global_shape), shape_str(p.spec.global_shape));
    const std::vector<int64_t> mine_at = offsets_of(p.spec);
    int64_t covered = 0;
    for (const CheckpointPiece& piece : tit->second.pieces) {
      if (!boxes_overlap(piece.offsets, piece.shape, mine_at, p.spec.local_shape)) continue;
      pieces_of[i].push_back(&piece);  // (another rank's box otherwise: FSSDP, ZeRO-1 pieces)
      covered += overlap_volume(piece.offsets, piece.shape, mine_at, p.spec.local_shape);
      Hdf5File& f = file_of(piece.file);
      for (int k = 0; k < 3; ++k) {
        const std::string ds = std::string(kKinds[k]) + "/" + piece.dataset;
        if (!verified.insert({piece.file, ds}).second) continue;
        read_checked_piece(f, path, piece, ds, piece.checksum[size_t(k)]);
      }
    }
    check(covered == p.value.numel(), "checkpoint '{}': tensor '{}' covers {} of the {} elements "
          "this rank holds (pieces missing or overlapping)", path, name, covered, p.value.numel());
  }
  if (buffers) *buffers = read_buffers(path, index.buffers, files);

  // Pass 2: all valid, now the weights change, a bounded box at a time (the parameter's flat
  // elements cut as a save cuts its pieces): its values and the moments this rank holds of it
  // (ZeRO-1: its shard's part) staged on the host, each overlapping piece read in turn.
  std::vector<float> stage[3];
  for (size_t i = 0; i < store.all().size(); ++i) {
    Param& p = store.all()[i];
    const std::vector<int64_t> mine_at = offsets_of(p.spec);
    const auto [lo, hi] = moments.held(p);
    for (const FlatBox& box : flat_boxes(p.spec.local_shape, 0, p.value.numel(), kPieceElements)) {
      std::vector<int64_t> at = mine_at;
      for (size_t d = 0; d < at.size(); ++d) at[d] += box.offsets[d];
      const int64_t n = box.numel(), a = std::max(lo, box.flat), b = std::min(hi, box.flat + n);
      const int kinds = a < b ? 3 : 1;  // moments only where this rank holds them
      for (int k = 0; k < kinds; ++k) {
        stage[k].assign(size_t(n), 0.f);
        for (const CheckpointPiece* piece : pieces_of[i]) {
          if (!boxes_overlap(piece->offsets, piece->shape, at, box.shape)) continue;
          const auto data = file_of(piece->file).read(std::string(kKinds[k]) + "/" + piece->dataset);
          copy_intersection(piece->offsets, piece->shape, data.data(), at, box.shape,
                            stage[k].data());
        }
      }
      be.copy_from_host(p.value.data() + box.flat, stage[0].data(), size_t(n) * sizeof(float));
      if (a < b)
        moments.write(p, a, b, stage[1].data() + (a - box.flat), stage[2].data() + (a - box.flat));
    }
  }
  return TrainingState{.step = index.step, .consumed_samples = index.consumed_samples,
                       .skipped = index.skipped, .optimizer_steps = index.optimizer_steps};
}

void read_on_every_rank(const Communicator& world, const std::string& what,
                        const std::function<void()>& read) {
  std::string error;
  try {
    read();
  } catch (const Error& e) {
    error = e.what();
  }
  agree(world, error, what);
}

CheckpointBuffers read_checkpoint_buffers(const std::string& path_in) {
  const std::string path = resolve_checkpoint(path_in);
  const CheckpointIndex index = read_checkpoint_index(path, kCheckpointFormatVersion);
  std::map<std::string, Hdf5File> files;
  return read_buffers(path, index.buffers, files);
}

CheckpointInfo read_checkpoint_info(const std::string& path_in) {
  CheckpointInfo info;
  info.path = resolve_checkpoint(path_in);
  const CheckpointIndex index = read_checkpoint_index(info.path, kCheckpointFormatVersion);
  info.format_version = index.format_version;
  info.state = {.step = index.step, .consumed_samples = index.consumed_samples,
                .skipped = index.skipped, .optimizer_steps = index.optimizer_steps};
  info.world_size = index.world_size;
  info.config_yaml = index.config_yaml;
  for (const auto& [name, t] : index.tensors) info.shapes[name] = t.global_shape;
  return info;
}

GlobalTensors read_checkpoint_tensors(const std::string& path_in, const std::string& kind) {
  const std::string path = resolve_checkpoint(path_in);
  const CheckpointIndex index = read_checkpoint_index(path, kCheckpointFormatVersion);
  const int k = kind == "model" ? 0 : kind == "exp_avg" ? 1 : kind == "exp_avg_sq" ? 2 : -1;
  check(k >= 0, "read_checkpoint_tensors: kind '{}' (model, exp_avg or exp_avg_sq)", kind);
  std::map<std::string, Hdf5File> files;
  GlobalTensors out;
  for (const auto& [name, t] : index.tensors) {
    auto& [gshape, data] = out[name];
    gshape = t.global_shape;
    const int64_t n = numel_of(gshape);
    data.assign(static_cast<size_t>(n), 0.f);
    int64_t covered = 0;
    for (const CheckpointPiece& piece : t.pieces) {
      Hdf5File& f = open_cached(files, piece.file);
      const auto piece_data = read_checked_piece(f, path, piece, kind + "/" + piece.dataset,
                                                 piece.checksum[size_t(k)]);
      covered += copy_intersection(piece.offsets, piece.shape, piece_data.data(),
                                   std::vector<int64_t>(gshape.size(), 0), gshape, data.data());
    }
    check(covered == n, "checkpoint '{}': the pieces of '{}' cover {} of its {} elements",
          path, name, covered, n);
  }
  return out;
}

std::string write_checkpoint_for_layout(
    const std::string& dir, const TrainingState& state, const std::string& config_yaml,
    const std::vector<std::vector<ParamSpec>>& rank_specs, const GlobalTensors& model,
    const GlobalTensors& exp_avg, const GlobalTensors& exp_avg_sq,
    const CheckpointBuffers& buffers) {
  const fs::path final_dir = fs::path(dir) / iter_name(state.step);
  const fs::path tmp_dir = fs::path(dir) / (iter_name(state.step) + ".tmp");
  fs::create_directories(dir);
  fs::remove_all(tmp_dir);
  fs::create_directory(tmp_dir);
  json index = index_header(state, int64_t(rank_specs.size()), config_yaml, !buffers.empty());
  const GlobalTensors* sources[3] = {&model, &exp_avg, &exp_avg_sq};
  for (size_t r = 0; r < rank_specs.size(); ++r) {
    const bool writes_buffers = r == 0 && !buffers.empty();
    if (rank_specs[r].empty() && !writes_buffers) continue;
    const std::string file = fmt::format("rank_{:05d}.h5", r);
    Hdf5File f = Hdf5File::create((tmp_dir / file).string());
    if (writes_buffers) index["buffers"] = write_buffers(f, file, buffers);
    std::map<std::string, int> written;  // as save_checkpoint: later boxes of a name get a suffix
    for (const ParamSpec& s : rank_specs[r]) {
      json piece{{"name", s.name}, {"file", file}, {"offsets", offsets_of(s)},
                 {"shape", s.local_shape}};
      const int nth = written[s.name]++;
      const std::string key = nth == 0 ? s.name : fmt::format("{}@{}", s.name, nth);
      if (nth > 0) piece["dataset"] = key;
      for (int k = 0; k < 3; ++k) {
        const auto it = sources[k]->find(s.name);
        check(it != sources[k]->end() && it->second.first == s.global_shape,
              "reshard: tensor '{}' ({}) is missing or has another shape in the source", s.name,
              kKinds[k]);
        std::vector<float> local(static_cast<size_t>(numel_of(s.local_shape)));
        copy_intersection(std::vector<int64_t>(s.global_shape.size(), 0), s.global_shape,
                          it->second.second.data(), offsets_of(s), s.local_shape, local.data());
        const std::string ds = std::string(kKinds[k]) + "/" + key;
        f.write(ds, s.local_shape, local.data());
        f.set_attribute(ds, "offsets", offsets_of(s));
        f.set_attribute(ds, "global_shape", s.global_shape);
        piece[std::string("checksum_") + kKinds[k]] = checksum(local.data(), int64_t(local.size()));
      }
      auto& t = index["tensors"][s.name];
      t["global_shape"] = s.global_shape;
      t["pieces"].push_back(piece);
    }
  }
  publish(dir, tmp_dir, final_dir, index, state.step, 0);
  return final_dir.string();
}

}  // namespace origami
