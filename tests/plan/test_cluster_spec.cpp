// Cluster files: the shipped ones load; a missing field, an unknown key or a bad value is an
// error naming the file, the line and the field; the YAML --calibrate writes reads back.
#include <gtest/gtest.h>

#include "base/error.h"
#include "plan/cluster_spec.h"
#include "plan_test_config.h"

namespace origami {
namespace {

const char* kGood = R"(name: test
source: made up
ranks_per_node: 8
device_memory_gib: 80
intra_node: {bandwidth_gbps: 450, latency_us: 3}
inter_node:
  bandwidth_gbps: 50
  latency_us: 5
compute:
  peak_tflops: 989
  efficiency: 0.6
  memory_gbps: 2700
)";

std::string error_of(const std::string& text) {
  try {
    parse_cluster_spec(text, "c.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ClusterSpec, ShippedFilesLoad) {
  for (const char* f : {"h100-nvlink-node.yaml", "h100-ndr400.yaml", "cpu-2core-8ranks.yaml"}) {
    const ClusterSpec c = load_cluster_spec(std::string(ORIGAMI_SOURCE_DIR) + "/configs/clusters/" + f);
    EXPECT_GT(c.device_memory_gib, 0) << f;
    EXPECT_FALSE(c.source.empty()) << f;
  }
}

TEST(ClusterSpec, MissingFieldNamesItAndTheLine) {
  std::string text = kGood;
  text.replace(text.find("  latency_us: 5\n"), 15, "");
  const std::string e = error_of(text);
  EXPECT_NE(e.find("c.yaml:7"), std::string::npos) << e;  // the inter_node map's line
  EXPECT_NE(e.find("inter_node"), std::string::npos) << e;
  EXPECT_NE(e.find("missing field 'latency_us'"), std::string::npos) << e;

  std::string no_compute = kGood;
  no_compute.erase(no_compute.find("compute:"));
  EXPECT_NE(error_of(no_compute).find("missing field 'compute'"), std::string::npos);
  std::string no_eff = kGood;
  no_eff.replace(no_eff.find("  efficiency: 0.6\n"), 18, "");
  EXPECT_NE(error_of(no_eff).find("missing field 'efficiency'"), std::string::npos);
}

TEST(ClusterSpec, UnknownKeysAndBadValues) {
  std::string typo = kGood;
  typo.replace(typo.find("ranks_per_node"), 14, "ranks_per_nod");
  const std::string e = error_of(typo);
  EXPECT_NE(e.find("c.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'ranks_per_nod'"), std::string::npos) << e;
  std::string neg = kGood;
  neg.replace(neg.find("bandwidth_gbps: 450"), 19, "bandwidth_gbps: -1");
  EXPECT_NE(error_of(neg).find("must be > 0"), std::string::npos);
  std::string eff = kGood;
  eff.replace(eff.find("efficiency: 0.6"), 15, "efficiency: 60");
  EXPECT_NE(error_of(eff).find("share of the peak"), std::string::npos);
  EXPECT_NE(error_of("name: [").find("c.yaml:1"), std::string::npos);
}

TEST(ClusterSpec, WrittenYamlReadsBack) {
  ClusterSpec c = test::test_cluster();
  c.compute.gemm_table = {{1e3, 2.0}, {1e6, 10.0}};
  c.compute.collective_sync_us = {{2, 100}, {8, 400}};
  c.compute.shared_cores = 2;
  const ClusterSpec back = parse_cluster_spec(cluster_spec_yaml(c), "written");
  EXPECT_EQ(back.compute.gemm_table, c.compute.gemm_table);
  EXPECT_EQ(back.compute.collective_sync_us, c.compute.collective_sync_us);
  EXPECT_EQ(back.ranks_per_node, 4);
  EXPECT_EQ(back.compute.shared_cores, 2);
  EXPECT_DOUBLE_EQ(back.inter_node.bandwidth_gbps, 0.5);
  // Between table points the rate is interpolated; the sync cost is linear in log2(size).
  EXPECT_NEAR(gemm_seconds(back.compute, 1e6), 1e6 / 10e9, 1e-15);
  EXPECT_NEAR(collective_sync_us(back.compute, 4), 250, 1e-9);
}

}  // namespace
}  // namespace origami
