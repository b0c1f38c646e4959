// defines: tiny_config(), test_cluster()
// The planner tests' inputs: the default job's model (the embedded default's shapes, no data
// needed: the planner never opens the data), and a made-up cluster with round figures so the
// expected bytes and times can be worked out by hand.
#pragma once
#include "config/config.h"
#include "plan/cluster_spec.h"

namespace origami::test {

inline Config tiny_config() {
  Config cfg;  // the defaults: H 128, 4 layers, 4 heads (2 kv), 8 experts top-2, V 8192
  cfg.source = "tiny";
  cfg.training.global_batch_size = 16;
  cfg.training.micro_batch_size = 4;
  cfg.training.seq_length = 128;
  cfg.model.max_seq_length = 128;
  cfg.model.vocab_size = 8192;
  return cfg;
}

// 1 GB/s links without latency, a flat 10 GFLOP/s, no per-op or sync costs; 4 ranks a node.
inline ClusterSpec test_cluster() {
  ClusterSpec c;
  c.name = "test";
  c.source = "tests/plan";
  c.ranks_per_node = 4;
  c.device_memory_gib = 1;
  c.bytes_per_element = 4;
  c.intra_node = {.bandwidth_gbps = 1, .latency_us = 0};
  c.inter_node = {.bandwidth_gbps = 0.5, .latency_us = 0};
  c.compute.peak_tflops = 0.01;
  c.compute.efficiency = 1;
  c.compute.memory_gbps = 10;
  return c;
}

}  // namespace origami::test
