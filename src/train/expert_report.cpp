// write_expert_report(): expert_report.json with each dataset's per-layer expert frequencies
// (tools/expert_specialisation.py plots it).
#include "train/expert_report.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace origami {

void write_expert_report(const std::string& dir, const ExpertReport& r) {
  const std::string json_path = dir + "/expert_report.json", csv_path = dir + "/expert_report.csv";
  nlohmann::json j{{"iteration", r.iteration}};
  for (size_t d = 0; d < r.datasets.size(); ++d)
    j["datasets"][r.datasets[d]] = {{"tokens", r.tokens[d]}, {"layers", r.freq[d]}};
  std::ofstream json(json_path, std::ios::app);
  check(json.good(), "cannot write expert report '{}'", json_path);
  json << j.dump() << "\n";

  const bool header = !std::filesystem::exists(csv_path);
  std::ofstream csv(csv_path, std::ios::app);
  check(csv.good(), "cannot write expert report '{}'", csv_path);
  if (header) csv << "iteration,dataset,layer,expert,frequency\n";
  for (size_t d = 0; d < r.datasets.size(); ++d)
    for (size_t l = 0; l < r.freq[d].size(); ++l)
      for (size_t e = 0; e < r.freq[d][l].size(); ++e)
        csv << r.iteration << ',' << r.datasets[d] << ',' << l << ',' << e << ','
            << r.freq[d][l][e] << '\n';
}

}  // namespace origami
