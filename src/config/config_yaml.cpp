// to_yaml() and Config equality. The effective config is written key by key from the schema in
// block style (one key per line, lists in flow style), with a header naming where it came from,
// so a run directory's config.yaml reads like a hand-written one and loads back to the same Config.
#include <fmt/format.h>

#include "config/config.h"
#include "config/config_schema.h"

namespace origami {

std::string to_yaml(const Config& cfg) {
  std::string out = fmt::format("# Effective Origami config (from {}).\n",
                                cfg.source.empty() ? "defaults" : cfg.source);
  std::vector<std::string> open;  // the section path of the previous key
  for (const ConfigField& field : config_schema()) {
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
      size_t dot = field.key.find('.', start);
      parts.push_back(field.key.substr(start, dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    // Open the sections this key needs beyond those it shares with the previous key. The schema
    // keeps a subsection's keys together, so a section is never opened twice.
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common])
      ++common;
    if (common == 0 && !open.empty()) out += "\n";
    for (size_t d = common; d + 1 < parts.size(); ++d)
      out += std::string(2 * d, ' ') + parts[d] + ":\n";
    open.assign(parts.begin(), parts.end() - 1);
    out += fmt::format("{}{}: {}\n", std::string(2 * open.size(), ' '), parts.back(),
                       field.write(cfg));
  }
  return out;
}

bool operator==(const Config& a, const Config& b) {
  return a.model == b.model && a.moe == b.moe && a.parallel == b.parallel &&
         a.training == b.training && a.optimizer == b.optimizer && a.data == b.data &&
         a.checkpoint == b.checkpoint && a.logging == b.logging;
}

}  // namespace origami
