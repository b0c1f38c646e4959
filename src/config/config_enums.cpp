// The config strings parsed into enums (config.h): one function each, the error naming the key
// and the allowed values as the schema does. The pipeline schedule spelling is the pipeline
// layer's (parse_schedule_kind); only the "unset means interleaved when v > 1" default is here.
#include "base/error.h"
#include "config/config.h"

namespace origami {

RecomputeMode parse_recompute_mode(const std::string& name) {
  if (name == "none") return RecomputeMode::none;
  if (name == "selective") return RecomputeMode::selective;
  if (name == "full") return RecomputeMode::full;
  fail("training.recompute: '{}'; allowed: none, selective, full", name);
}

RouterScore parse_router_score(const std::string& name) {
  if (name == "softmax") return RouterScore::softmax;
  if (name == "sigmoid") return RouterScore::sigmoid;
  fail("moe.router.score: '{}'; allowed: softmax, sigmoid", name);
}

namespace {
constexpr const char* kScheduleKey = "parallel.pipeline_schedule";
}  // namespace

ScheduleKind pipeline_schedule_kind(const Config& cfg) {
  const auto& p = cfg.parallel;
  if (!cfg.origin.contains(kScheduleKey) && p.pipeline_schedule == "1f1b" &&
      p.virtual_pipeline > 1)
    return ScheduleKind::interleaved;
  return parse_schedule_kind(p.pipeline_schedule);
}

void resolve_pipeline_schedule(Config& cfg) {
  // Only the two spellings the default can take are rewritten, so a gpipe set in code stays.
  auto& s = cfg.parallel.pipeline_schedule;
  if (cfg.origin.contains(kScheduleKey) || (s != "1f1b" && s != "interleaved")) return;
  s = cfg.parallel.virtual_pipeline > 1 ? "interleaved" : "1f1b";
}

}  // namespace origami
