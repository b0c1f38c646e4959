// The cluster file reader: every section is a map whose keys are checked against a fixed list
// (unknown ones refused with the allowed keys), every required key must be present (the error
// names it, the section and the section's line), numbers must be positive where zero means
// nothing sensible. Values are read with the config loader's strict scalar readers.
#include "plan/cluster_spec.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"
#include "config/yaml_values.h"

namespace origami {
namespace {

std::string at(const std::string& path, const YAML::Node& node) {
  return node.Mark().is_null() ? path : fmt::format("{}:{}", path, node.Mark().line + 1);
}

// A map section with a fixed key list: refuses other keys and returns a lookup that fails with
// "path:line: section: missing field 'key'" for absent required keys.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, std::string name,
          std::vector<std::string> keys)
      : node_(node), path_(std::move(path)), name_(std::move(name)), keys_(std::move(keys)) {
    if (!node_.IsMap())
      fail("{}: {}: expected a map with keys {}, found {}", at(path_, node_), name_, allowed(),
           describe_node(node_));
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (std::find(keys_.begin(), keys_.end(), key) == keys_.end())
        fail("{}: {}: unknown key '{}'; allowed: {}", at(path_, kv.first), name_, key, allowed());
    }
  }
  bool has(const std::string& key) const { return bool(node_[key]); }
  YAML::Node get(const std::string& key) const {
    if (!node_[key])
      fail("{}: {}: missing field '{}' (the cluster file needs: {})", at(path_, node_), name_,
           key, allowed());
    return node_[key];
  }
  std::string where(const std::string& key) const {
    return node_[key] ? at(path_, node_[key]) : at(path_, node_);
  }
  double positive(const std::string& key) const {
    const double x = read_number(get(key), where(key), name_ + "." + key);
    check(x > 0 && std::isfinite(x), "{}: {}.{} = {} must be > 0", where(key), name_, key, x);
    return x;
  }
  double non_negative(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const double x = read_number(get(key), where(key), name_ + "." + key);
    check(x >= 0 && std::isfinite(x), "{}: {}.{} = {} must be >= 0", where(key), name_, key, x);
    return x;
  }
  const std::string& path() const { return path_; }

 private:
  std::string allowed() const {
    std::string out;
    for (const auto& k : keys_) out += (out.empty() ? "" : ", ") + k;
    return out;
  }
  YAML::Node node_;
  std::string path_, name_;
  std::vector<std::string> keys_;
};

LinkSpec read_link(const Section& parent, const std::string& key) {
  const Section s(parent.get(key), parent.path(), key, {"bandwidth_gbps", "latency_us"});
  s.get("latency_us");  // required: 0 is a valid figure, absence is not
  return LinkSpec{.bandwidth_gbps = s.positive("bandwidth_gbps"),
                  .latency_us = s.non_negative("latency_us", 0)};
}

// A list of [x, y] pairs with x, y > 0, sorted by x.
std::vector<std::pair<double, double>> read_pairs(const Section& s, const std::string& path,
                                                  const std::string& key, const char* names) {
  const YAML::Node t = s.get(key);
  check(t.IsSequence() && t.size() > 0, "{}: compute.{}: expected a list of [{}] pairs, found {}",
        s.where(key), key, names, describe_node(t));
  std::vector<std::pair<double, double>> out;
  for (const auto& row : t) {
    const std::string w = at(path, row);
    check(row.IsSequence() && row.size() == 2, "{}: compute.{}: expected [{}], found {}", w, key,
          names, describe_node(row));
    const double x = read_number(row[0], w, "compute." + key);
    const double y = read_number(row[1], w, "compute." + key);
    check(x > 0 && y >= 0, "{}: compute.{}: [{}] must be > 0 and >= 0", w, key, names);
    out.emplace_back(x, y);
  }
  std::sort(out.begin(), out.end());
  return out;
}

ComputeSpec read_compute(const Section& parent) {
  const Section s(parent.get("compute"), parent.path(), "compute",
                  {"gemm_table", "peak_tflops", "efficiency", "attention_gflops",
                   "attention_backward_gflops", "cross_entropy_ns", "swiglu_ns", "adamw_ns",
                   "memory_gbps", "op_overhead_us", "collective_sync_us", "shared_cores"});
  ComputeSpec c;
  if (s.has("gemm_table")) {
    c.gemm_table = read_pairs(s, parent.path(), "gemm_table", "flops, gflops_per_s");
    for (const auto& [f, r] : c.gemm_table)
      check(r > 0, "{}: compute.gemm_table: GFLOP/s must be > 0", s.where("gemm_table"));
  } else {  // a datasheet device: the peak and the share of it a training step's GEMMs reach
    c.peak_tflops = s.positive("peak_tflops");
    c.efficiency = s.positive("efficiency");
    check(c.efficiency <= 1, "{}: compute.efficiency = {} is a share of the peak; allowed: (0, 1]",
          s.where("efficiency"), c.efficiency);
  }
  c.attention_gflops = s.non_negative("attention_gflops", 0);
  c.attention_backward_gflops = s.non_negative("attention_backward_gflops", 0);
  c.cross_entropy_ns = s.non_negative("cross_entropy_ns", 0);
  c.swiglu_ns = s.non_negative("swiglu_ns", 0);
  c.adamw_ns = s.non_negative("adamw_ns", 0);
  c.memory_gbps = s.positive("memory_gbps");
  c.op_overhead_us = s.non_negative("op_overhead_us", 0);
  if (s.has("collective_sync_us"))
    c.collective_sync_us = read_pairs(s, parent.path(), "collective_sync_us", "ranks, us");
  c.shared_cores = int(s.non_negative("shared_cores", 0));
  return c;
}

}  // namespace

ClusterSpec parse_cluster_spec(const std::string& yaml_text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    fail("{}:{}:{}: invalid YAML: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  const Section top(root, path, "cluster",
                    {"name", "source", "ranks_per_node", "device_memory_gib",
                     "bytes_per_element", "intra_node", "inter_node", "compute"});
  ClusterSpec spec;
  spec.path = path;
  spec.name = read_string(top.get("name"), top.where("name"), "name");
  spec.source = read_string(top.get("source"), top.where("source"), "source");
  spec.ranks_per_node = int(read_int(top.get("ranks_per_node"), top.where("ranks_per_node"),
                                     "ranks_per_node"));
  check(spec.ranks_per_node >= 1, "{}: ranks_per_node = {} must be >= 1",
        top.where("ranks_per_node"), spec.ranks_per_node);
  spec.device_memory_gib = top.positive("device_memory_gib");
  if (top.has("bytes_per_element")) {
    spec.bytes_per_element = int(read_int(top.get("bytes_per_element"),
                                          top.where("bytes_per_element"), "bytes_per_element"));
    check(spec.bytes_per_element == 2 || spec.bytes_per_element == 4,
          "{}: bytes_per_element = {}; allowed: 2 (bf16) or 4 (fp32)",
          top.where("bytes_per_element"), spec.bytes_per_element);
  }
  spec.intra_node = read_link(top, "intra_node");
  spec.inter_node = read_link(top, "inter_node");
  spec.compute = read_compute(top);
  return spec;
}

ClusterSpec load_cluster_spec(const std::string& path) {
  std::ifstream in(path);
  check(in.good(), "cluster file '{}' cannot be opened (missing or unreadable); shipped ones are "
        "in configs/clusters/, or write one with origami-plan --calibrate", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_cluster_spec(text.str(), path);
}

std::string cluster_spec_yaml(const ClusterSpec& s) {
  std::string out;
  out += fmt::format("name: {}\nsource: {}\n", yaml_quote(s.name), yaml_quote(s.source));
  out += fmt::format("ranks_per_node: {}\ndevice_memory_gib: {}\nbytes_per_element: {}\n",
                     s.ranks_per_node, yaml_number(s.device_memory_gib), s.bytes_per_element);
  for (const auto& [key, l] : {std::pair{"intra_node", s.intra_node},
                               std::pair{"inter_node", s.inter_node}})
    out += fmt::format("{}: {{bandwidth_gbps: {}, latency_us: {}}}\n", key,
                       yaml_number(l.bandwidth_gbps), yaml_number(l.latency_us));
  const auto& c = s.compute;
  out += "compute:\n";
  if (!c.gemm_table.empty()) {
    out += "  gemm_table:            # [flops of one GEMM call, GFLOP/s per rank]\n";
    for (const auto& [f, r] : c.gemm_table)
      out += fmt::format("    - [{}, {}]\n", yaml_number(f), yaml_number(r));
  } else {
    out += fmt::format("  peak_tflops: {}\n  efficiency: {}\n", yaml_number(c.peak_tflops),
                       yaml_number(c.efficiency));
  }
  for (auto [key, x] : {std::pair{"attention_gflops", c.attention_gflops},
                        std::pair{"attention_backward_gflops", c.attention_backward_gflops},
                        std::pair{"cross_entropy_ns", c.cross_entropy_ns},
                        std::pair{"swiglu_ns", c.swiglu_ns}, std::pair{"adamw_ns", c.adamw_ns}})
    if (x > 0) out += fmt::format("  {}: {}\n", key, yaml_number(x));
  out += fmt::format("  memory_gbps: {}\n  op_overhead_us: {}\n", yaml_number(c.memory_gbps),
                     yaml_number(c.op_overhead_us));
  if (!c.collective_sync_us.empty()) {
    out += "  collective_sync_us:    # [group size, us per collective: waiting for its members]\n";
    for (const auto& [g, us] : c.collective_sync_us)
      out += fmt::format("    - [{}, {}]\n", yaml_number(g), yaml_number(us));
  }
  if (c.shared_cores > 0) out += fmt::format("  shared_cores: {}\n", c.shared_cores);
  return out;
}

double collective_sync_us(const ComputeSpec& c, int size) {
  const auto& t = c.collective_sync_us;
  if (t.empty() || size <= 1) return 0;
  const double x = std::log2(double(size));
  if (x <= std::log2(t.front().first)) return t.front().second;
  if (x >= std::log2(t.back().first)) return t.back().second;
  size_t i = 1;
  while (std::log2(t[i].first) < x) ++i;
  const double x0 = std::log2(t[i - 1].first), x1 = std::log2(t[i].first);
  return t[i - 1].second + (t[i].second - t[i - 1].second) * (x - x0) / (x1 - x0);
}

double ranks_per_core(const ClusterSpec& c, int world) {
  const int on_node = std::min(world, c.ranks_per_node), cores = c.compute.shared_cores;
  return cores > 0 && on_node > cores ? double(on_node) / cores : 1.0;
}

double gemm_seconds(const ComputeSpec& c, double flops) {
  if (flops <= 0) return 0;
  if (c.gemm_table.empty()) return flops / (c.peak_tflops * 1e12 * c.efficiency);
  const auto& t = c.gemm_table;
  double gflops;
  if (flops <= t.front().first) {
    gflops = t.front().second * flops / t.front().first;  // below the table: fixed time per call
    gflops = std::max(gflops, 1e-9);
  } else if (flops >= t.back().first) {
    gflops = t.back().second;
  } else {
    size_t i = 1;
    while (t[i].first < flops) ++i;
    const double x0 = std::log(t[i - 1].first), x1 = std::log(t[i].first);
    const double y0 = std::log(t[i - 1].second), y1 = std::log(t[i].second);
    gflops = std::exp(y0 + (y1 - y0) * (std::log(flops) - x0) / (x1 - x0));
  }
  return flops / (gflops * 1e9);
}

}  // namespace origami
