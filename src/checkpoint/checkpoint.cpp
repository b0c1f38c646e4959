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

CheckpointBuffers read_buffers(const std::string& path,
                               const std::map<std::string, CheckpointBufferEntry>& entries,
                               std::map<std::string, Hdf5File>& files) {
  CheckpointBuffers out;
  for (const auto& [name, entry] : entries) {
    auto fit = files.find(entry.file);
    if (fit == files.end()) fit = files.emplace(entry.file, Hdf5File::open_read(entry.file)).first;
    const std::string ds = "buffers/" + name;
    check(fit->second.has(ds), "checkpoint '{}': {} has no dataset '{}'", path, entry.file, ds);
    auto data = fit->second.read(ds);
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

std::string save_checkpoint(Backend& be, const std::string& dir, int64_t keep_last,
                            const TrainingState& state,
                            const std::string& config_yaml, const ParamStore& store,
                            const std::vector<float>& m, const std::vector<float>& v,
                            const ProcessGroups& groups, const Communicator& world,
                            const CheckpointBuffers& buffers) {
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
    const float* base = store.all_values().data();
    std::vector<const Param*> mine;
    for (const Param& p : store.all()) {
      const Communicator& replicas =
          p.spec.grad_group == GradGroup::dense ? *groups.dp_cp : *groups.edp;
      const bool tp_first = p.spec.grad_group == GradGroup::expert ||
                            first_tp_holder(p.spec, groups.tp->rank(), groups.tp->size());
      // The last pipeline stage's copy of a tied embedding: the first stage stores it. FSSDP's
      // owned experts have no replicas: their owner stores them.
      if ((replicas.rank() == 0 || p.spec.owned_once()) && tp_first && !p.spec.pipeline_copy)
        mine.push_back(&p);
    }
    // Replicated over the stage: its first rank writes its layers' buffers, once.
    const bool writes_buffers = groups.stage->rank() == 0 && !buffers.empty();
    if (!mine.empty() || writes_buffers) {
      std::vector<float> host;
      {
        Hdf5File f = Hdf5File::create((tmp_dir / file).string());
        if (writes_buffers) buffer_index = write_buffers(f, file, buffers);
        std::map<std::string, int> written;  // pieces of one name in this file so far
        for (const Param* p : mine) {
          const int64_t off = p->value.data() - base, n = p->value.numel();
          json piece{{"name", p->spec.name}, {"file", file}, {"offsets", offsets_of(p->spec)},
                     {"shape", p->spec.local_shape}, {"global_shape", p->spec.global_shape}};
          // FSSDP: one rank may own several boxes of a tensor (experts that are not adjacent);
          // the second and later get their own dataset names.
          const int nth = written[p->spec.name]++;
          const std::string key = nth == 0 ? p->spec.name : fmt::format("{}@{}", p->spec.name, nth);
          if (nth > 0) piece["dataset"] = key;
          const float* sources[3] = {nullptr, m.data() + off, v.data() + off};
          host.resize(size_t(n));
          be.copy_to_host(host.data(), p->value.data(), size_t(n) * sizeof(float));
          sources[0] = host.data();
          for (int k = 0; k < 3; ++k) {
            const std::string ds = std::string(kKinds[k]) + "/" + key;
            f.write(ds, p->spec.local_shape, sources[k]);
            f.set_attribute(ds, "offsets", offsets_of(p->spec));
            f.set_attribute(ds, "global_shape", p->spec.global_shape);
            piece[std::string("checksum_") + kKinds[k]] = checksum(sources[k], n);
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

TrainingState load_checkpoint(Backend& be, const std::string& path_in, ParamStore& store,
                              std::vector<float>& m, std::vector<float>& v,
                              CheckpointBuffers* buffers,
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

  // Validate and assemble every local shard on the host first; overwrite nothing until all pass.
  const int64_t total = store.count();
  std::vector<float> values(static_cast<size_t>(total));
  m.assign(size_t(total), 0.f);
  v.assign(size_t(total), 0.f);
  std::map<std::string, Hdf5File> files;
  const float* base = store.all_values().data();
  for (const Param& p : store.all()) {
    const std::string& name = p.spec.name;
    auto tit = tensors.find(name);
    check(tit != tensors.end(), "checkpoint '{}': tensor '{}' is missing (the run's model has "
          "it: was the checkpoint written with another model config?)", path, name);
    check(tit->second.global_shape == p.spec.global_shape, "checkpoint '{}': tensor '{}' has "
          "global shape {}, the run's model needs {}", path, name,
          shape_str(tit->second.global_shape), shape_str(p.spec.global_shape));
    const int64_t off = p.value.data() - base;
    float* dst[3] = {values.data() + off, m.data() + off, v.data() + off};
    int64_t covered = 0;
    const std::vector<int64_t> mine_at = offsets_of(p.spec);
    for (const CheckpointPiece& piece : tit->second.pieces) {
      const auto& po = piece.offsets;
      const auto& ps = piece.shape;
      bool overlaps = true;
      for (size_t d = 0; overlaps && d < po.size(); ++d)
        overlaps = po[d] < mine_at[d] + p.spec.local_shape[d] && mine_at[d] < po[d] + ps[d];
      if (!overlaps) continue;  // another rank's box (FSSDP: another expert)
      auto fit = files.find(piece.file);
      if (fit == files.end()) fit = files.emplace(piece.file, Hdf5File::open_read(piece.file)).first;
      for (int k = 0; k < 3; ++k) {
        const std::string ds = std::string(kKinds[k]) + "/" + piece.dataset;
        check(fit->second.has(ds), "checkpoint '{}': {} has no dataset '{}'", path, piece.file, ds);
        check(fit->second.shape(ds) == ps, "checkpoint '{}': dataset '{}' in {} has shape {}, "
              "its index says {}", path, ds, piece.file, shape_str(fit->second.shape(ds)),
              shape_str(ps));
        const auto data = fit->second.read(ds);
        check(checksum(data.data(), int64_t(data.size())) == piece.checksum[size_t(k)],
              "checkpoint '{}': dataset '{}' in {} fails its checksum (corrupted file)", path, ds,
              piece.file);
        const int64_t n = copy_intersection(po, ps, data.data(), mine_at, p.spec.local_shape,
                                            dst[k]);
        if (k == 0) covered += n;
      }
    }
    check(covered == p.value.numel(), "checkpoint '{}': tensor '{}' covers {} of the {} elements "
          "this rank holds (pieces missing or overlapping)", path, name, covered, p.value.numel());
  }
  if (buffers) *buffers = read_buffers(path, index.buffers, files);
  // All valid: now the weights change.
  Tensor all = store.all_values();
  be.copy_from_host(all.data(), values.data(), values.size() * sizeof(float));
  return TrainingState{.step = index.step, .consumed_samples = index.consumed_samples,
                       .skipped = index.skipped, .optimizer_steps = index.optimizer_steps};
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
      auto fit = files.find(piece.file);
      if (fit == files.end()) fit = files.emplace(piece.file, Hdf5File::open_read(piece.file)).first;
      const std::string ds = kind + "/" + piece.dataset;
      check(fit->second.has(ds), "checkpoint '{}': {} has no dataset '{}'", path, piece.file, ds);
      check(fit->second.shape(ds) == piece.shape, "checkpoint '{}': dataset '{}' in {} has shape "
            "{}, its index says {}", path, ds, piece.file, shape_str(fit->second.shape(ds)),
            shape_str(piece.shape));
      const auto piece_data = fit->second.read(ds);
      check(checksum(piece_data.data(), int64_t(piece_data.size())) == piece.checksum[size_t(k)],
            "checkpoint '{}': dataset '{}' in {} fails its checksum (corrupted file)", path, ds,
            piece.file);
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
