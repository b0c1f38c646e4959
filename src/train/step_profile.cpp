// defines: StepProfile (see step_profile.h)
#include "train/step_profile.h"

#include <nlohmann/json.hpp>

#include <vector>

#include "base/cpu_clock.h"
#include "base/error.h"

namespace origami {

StepProfile::StepProfile(ProfilingBackend& backend, std::shared_ptr<CommTimes> times,
                         const Communicator& world, const std::string& run_dir)
    : backend_(backend), times_(std::move(times)), world_(world) {
  if (run_dir.empty()) return;
  const std::string path = run_dir + "/profile.jsonl";
  jsonl_.open(path, std::ios::app);
  check(jsonl_.good(), "logging.profile: cannot open '{}' for writing", path);
}

void StepProfile::begin_step() {
  backend_.reset();
  times_->reset();
  cpu_start_s_ = process_cpu_seconds();
}

void StepProfile::end_step(int64_t iteration, double step_seconds) {
  nlohmann::json mine{{"rank", world_.rank()}, {"step_ms", 1e3 * step_seconds},
                      {"cpu_ms", 1e3 * (process_cpu_seconds() - cpu_start_s_)}};
  double compute = 0, compute_cpu = 0, comm = 0, comm_cpu = 0;
  nlohmann::json ops = nlohmann::json::object(), groups = nlohmann::json::object();
  for (const OpTime& t : backend_.report()) {
    ops[t.op] = {{"ms", t.ms}, {"cpu_ms", t.cpu_ms}, {"calls", t.calls}};
    compute += t.ms;
    compute_cpu += t.cpu_ms;
  }
  for (const auto& [name, e] : times_->by_group) {
    groups[name] = {{"ms", 1e3 * e.seconds}, {"cpu_ms", 1e3 * e.cpu_seconds}, {"calls", e.calls}};
    comm += 1e3 * e.seconds;
    comm_cpu += 1e3 * e.cpu_seconds;
  }
  mine["compute_ms"] = compute;
  mine["compute_cpu_ms"] = compute_cpu;
  mine["comm_ms"] = comm;
  mine["comm_cpu_ms"] = comm_cpu;
  mine["ops"] = std::move(ops);
  mine["comm"] = std::move(groups);

  // Every rank's JSON text to every rank (lengths first): small, once per logged step.
  const std::string text = mine.dump();
  const int64_t length = int64_t(text.size());
  std::vector<int64_t> lengths(size_t(world_.size())), displs(size_t(world_.size()));
  world_.allgather(&length, lengths.data(), 1, CommDType::i64);
  int64_t total = 0;
  for (size_t r = 0; r < lengths.size(); ++r) displs[r] = total, total += lengths[r];
  std::string all(size_t(total), '\0');
  world_.allgatherv(text.data(), length, all.data(), lengths, displs, CommDType::u8);
  if (world_.rank() != 0) return;
  nlohmann::json line{{"iteration", iteration}, {"ranks", nlohmann::json::array()}};
  for (size_t r = 0; r < lengths.size(); ++r)
    line["ranks"].push_back(nlohmann::json::parse(all.substr(size_t(displs[r]), size_t(lengths[r]))));
  jsonl_ << line.dump() << '\n';
  jsonl_.flush();
}

}  // namespace origami
