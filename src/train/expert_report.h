// defines: ExpertReport, write_expert_report()
// Expert specialisation by domain: for each dataset of the blend (e.g. the 15 Brown genres), the
// fraction of its (token, slot) assignments each expert of each MoE layer receives. Comparing
// reports of runs with micro-batch and global-batch balancing shows the effect the Qwen paper
// describes (global balancing lets experts specialise).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace origami {

struct ExpertReport {
  int64_t iteration = 0;
  std::vector<std::string> datasets;                   // blend paths
  std::vector<int64_t> tokens;                         // [dataset] tokens measured
  std::vector<std::vector<std::vector<double>>> freq;  // [dataset][moe layer][expert], sums to 1
};

// Writes <dir>/expert_report.json (one object per call, appended as a JSON line) and
// <dir>/expert_report.csv (rows: iteration,dataset,layer,expert,frequency; header once).
void write_expert_report(const std::string& dir, const ExpertReport& report);

}  // namespace origami
