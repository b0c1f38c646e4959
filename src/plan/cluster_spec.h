// defines: LinkSpec, ComputeSpec, ClusterSpec, load_cluster_spec(), parse_cluster_spec(),
//          cluster_spec_yaml(), gemm_seconds(), default_cluster()
// The machine a plan is made for: ranks per node, per-device memory, the links inside a node and
// between nodes (bandwidth and latency per rank), and how fast a device computes: either a
// measured table (origami-plan --calibrate on this machine) or a peak with an efficiency factor
// (a GPU datasheet). Read from YAML with file:line errors naming the missing or unknown field,
// as the config loader does; configs/clusters/ holds the shipped files with their sources.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace origami {

struct LinkSpec {
  double bandwidth_gbps = 0;  // GB/s (10^9 bytes) each rank can send (and receive) at once
  double latency_us = 0;      // per message step of a collective
};

struct ComputeSpec {
  // GEMM throughput per rank: measured (flops of one call -> GFLOP/s, interpolated in log-log
  // between the points), else peak_tflops x efficiency for every GEMM.
  std::vector<std::pair<double, double>> gemm_table;
  double peak_tflops = 0;
  double efficiency = 0;        // the share of the peak the GEMMs of a training step reach
  double attention_gflops = 0;  // causal attention core (measured), 0 = the GEMM rate
  double memory_gbps = 0;       // elementwise ops and the optimizer: bytes moved / this
  double op_overhead_us = 0;    // fixed cost of each op (a kernel launch, a CPU op's setup)
  // Ranks of a node sharing this many cores (an oversubscribed CPU run); 0 = a device per rank.
  // Measured rates already include the sharing; the planner only reports it.
  int shared_cores = 0;
};

struct ClusterSpec {
  std::string name;
  std::string source;          // where the figures come from (datasheets, a calibration run)
  std::string path;            // the file it was read from ("" = built in)
  int ranks_per_node = 1;
  double device_memory_gib = 0;  // what one rank may allocate
  int bytes_per_element = 4;     // activations and gradients on the wire (Origami moves fp32)
  LinkSpec intra_node, inter_node;
  ComputeSpec compute;
};

// Throws Error "path:line: ..." naming a missing field (and the section it belongs to), an unknown
// key (with the allowed keys), a wrong type or a value out of range.
ClusterSpec parse_cluster_spec(const std::string& yaml_text, const std::string& path);
ClusterSpec load_cluster_spec(const std::string& path);
// The spec as YAML that parse_cluster_spec reads back (what --calibrate writes).
std::string cluster_spec_yaml(const ClusterSpec& spec);

// Seconds of one GEMM of `flops` floating-point operations on this compute spec.
double gemm_seconds(const ComputeSpec& c, double flops);

}  // namespace origami
