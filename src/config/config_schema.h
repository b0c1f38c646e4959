// defines: ConfigOrigin, ConfigField, config_schema(), find_field(), is_config_section(),
//          section_children()
// The one table of config keys: each row knows its full key, how to read a YAML node into the
// Config (type and range checks with "where: key: found ..., allowed ..." errors) and how to write
// the value back as one-line YAML. The loader, --set overrides and to_yaml all walk it, so a new
// key is one row here (plus its struct field and its line in docs/configuration.md).
#pragma once
#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace origami {

// Where nodes come from, for errors: "file:line" in a file, the whole "--set k=v" for overrides.
struct ConfigOrigin {
  std::string source;
  bool is_override = false;
  // yaml-cpp marks are 0-based; people count lines from 1. Nodes without a mark (null values)
  // fall back to `fallback`, normally the line of their key.
  std::string at(const YAML::Mark& mark, const std::string& fallback = "") const;
};

struct ConfigField {
  std::string key;   // full dotted key, e.g. "moe.router.aux_loss_coeff"
  std::string type;  // for messages: "integer >= 1", "number or null", ...
  // Reads `node` into cfg; `where` (the key's "file:line" or "--set k=v") prefixes errors, and
  // `origin` locates items of list values (data.blend entries).
  std::function<void(Config& cfg, const YAML::Node& node, const std::string& where,
                     const ConfigOrigin& origin)>
      read;
  std::function<std::string(const Config& cfg)> write;  // one-line YAML (flow style)
};

// Rows in to_yaml order: sections in DESIGN.md order, a subsection after its parent's keys.
const std::vector<ConfigField>& config_schema();
const ConfigField* find_field(const std::string& key);
// "moe", "moe.router", "data.tokenizer": prefixes of keys that hold a map of further keys.
bool is_config_section(const std::string& prefix);
// Immediate children of a section ("" = the top level): key names and subsection names.
std::vector<std::string> section_children(const std::string& prefix);

}  // namespace origami
