// The config strings parsed into enums (config.h): one function each, the error naming the key
// and the allowed values as the schema does.
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

}  // namespace origami
