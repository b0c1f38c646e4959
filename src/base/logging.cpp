#include "base/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace origami {

void init_logging(int rank, const std::string& level, bool all_ranks) {
  auto logger = spdlog::stdout_color_mt("origami-" + std::to_string(rank));
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(rank) + "] [%^%l%$] %v");
  auto lvl = spdlog::level::from_str(level);
  if (rank != 0 && !all_ranks && lvl < spdlog::level::warn) lvl = spdlog::level::warn;
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
}

}  // namespace origami
