// init_logging() and format_bytes(): the rank-aware spdlog logger and the one byte formatter
// every log line uses.
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

std::string format_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) b /= 1024.0, ++u;
  return fmt::format("{:.1f} {}", b, units[u]);
}

}  // namespace origami
