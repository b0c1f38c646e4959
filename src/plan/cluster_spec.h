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
  double attention_gflops = 0;  // causal attention core forward (measured), 0 = the GEMM rate
  double attention_backward_gflops = 0;  // its backward, counted in forward FLOPs; 0 = 1/2.5 of it
  // Nanoseconds per element of the ops that are neither GEMMs nor plain copies on a CPU (exp,
  // sqrt): softmax cross-entropy forward + backward per logit, SwiGLU forward + backward per
  // output, AdamW per parameter. 0 = bytes moved over memory_gbps (a GPU's memory-bound kernels).
  double cross_entropy_ns = 0;
  double swiglu_ns = 0;
  double adamw_ns = 0;
  double memory_gbps = 0;       // elementwise ops and the optimizer: bytes moved / this
  double op_overhead_us = 0;    // fixed cost of each op (a kernel launch, a CPU op's setup)
  // Cost of each collective beyond its transfer, by group size ([size, microseconds], linear in
  // log2 of the size between points): on ranks that share cores, a collective waits until every
  // member is scheduled, which back-to-back collectives never show, and the waiting ranks burn
  // CPU the others could have used. Empty = none.
  std::vector<std::pair<double, double>> collective_sync_us;
  // Ranks of a node sharing this many cores (an oversubscribed CPU run); 0 = a device per rank.
  // With sharing, the rates above are one rank's own CPU time (measured with every rank running,
  // so cache and memory contention are in them), and a rank's compute takes ranks_per_node /
  // shared_cores times as long in wall time: `origami-train` with logging.profile showed every
  // core kept busy, with ranks that wait on a collective handing theirs to the others.
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

// Microseconds of compute.collective_sync_us for a group of `size` ranks (0 when empty).
double collective_sync_us(const ComputeSpec& c, int size);
// Wall seconds per second of one rank's own compute on a node of `world` ranks: the node's ranks
// over compute.shared_cores where they outnumber the cores, else 1 (a device per rank).
double ranks_per_core(const ClusterSpec& c, int world);
// Seconds of one GEMM of `flops` floating-point operations on this compute spec.
double gemm_seconds(const ComputeSpec& c, double flops);

}  // namespace origami
