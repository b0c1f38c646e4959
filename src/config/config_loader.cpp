// parse_config(), load_config(), apply_override(): YAML text or "--set key=value" into a Config.
// Both walk the key table of config_schema.h: a map node at a section is read key by key, an
// unknown key is an error listing the section's keys (with a "did you mean" within 2 edits), and
// every key read records where it came from in cfg.origin for validate()'s messages.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"
#include "config/config.h"
#include "config/config_schema.h"
#include "config/yaml_values.h"

namespace origami {
namespace {

std::string join_keys(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

std::string full_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

[[noreturn]] void unknown_key(const std::string& where, const std::string& prefix,
                              const std::string& key) {
  std::vector<std::string> allowed = section_children(prefix);
  std::string hint;
  int best = 3;
  for (const auto& a : allowed) {
    int d = edit_distance(key, a);
    if (d < best) {
      best = d;
      hint = fmt::format(" (did you mean '{}'?)", full_key(prefix, a));
    }
  }
  const std::string section = prefix.empty() ? "the top level (sections)" : "section " + prefix;
  fail("{}: unknown key '{}'{}; allowed keys in {}: {}", where, full_key(prefix, key), hint,
       section, join_keys(allowed));
}

void read_section(Config& cfg, const std::string& prefix, const YAML::Node& node,
                  const std::string& where, const ConfigOrigin& origin);

// Reads `node` as the value of `key` (a field or a section).
void read_key(Config& cfg, const std::string& key, const YAML::Node& node, const std::string& where,
              const ConfigOrigin& origin) {
  if (const ConfigField* field = find_field(key)) {
    field->read(cfg, node, where, origin);
    cfg.origin[key] = where;
  } else {
    read_section(cfg, key, node, where, origin);
  }
}

// A section's value is a map of its keys; null (an empty "moe:") keeps the defaults.
void read_section(Config& cfg, const std::string& prefix, const YAML::Node& node,
                  const std::string& where, const ConfigOrigin& origin) {
  if (node.IsNull()) return;
  if (!node.IsMap()) {
    const std::string what = prefix.empty() ? "the config" : prefix;
    fail("{}: {}: expected a map of keys ({}), found {}", where, what,
         join_keys(section_children(prefix)), describe_node(node));
  }
  std::set<std::string> seen;
  for (const auto& kv : node) {
    const std::string at = origin.at(kv.first.Mark(), where);
    if (!kv.first.IsScalar())
      fail("{}: expected a key name in {}, found {}", at, prefix.empty() ? "the config" : prefix,
           describe_node(kv.first));
    const std::string name = kv.first.Scalar();
    const std::string key = full_key(prefix, name);
    if (!find_field(key) && !is_config_section(key)) unknown_key(at, prefix, name);
    check(seen.insert(name).second, "{}: duplicate key '{}'", at, key);
    read_key(cfg, key, kv.second, at, origin);
  }
}

YAML::Node load_yaml(const std::string& text, const std::string& where_prefix, bool with_line) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    if (with_line)
      fail("{}:{}:{}: invalid YAML: {}", where_prefix, e.mark.line + 1, e.mark.column + 1, e.msg);
    fail("{}: invalid YAML value: {}", where_prefix, e.msg);
  }
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source) {
  Config cfg;
  cfg.source = source;
  YAML::Node root = load_yaml(yaml_text, source, true);
  try {
    read_section(cfg, "", root, source, ConfigOrigin{source, false});
  } catch (const YAML::Exception& e) {  // our readers check types first; this is a backstop
    fail("{}:{}: {}", source, e.mark.line + 1, e.msg);
  }
  resolve_pipeline_schedule(cfg);
  return cfg;
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  check(in.good(), "config file '{}' cannot be opened (missing or unreadable)", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

void apply_override(Config& cfg, const std::string& assignment) {
  const std::string where = "--set " + assignment;
  const auto eq = assignment.find('=');
  check(eq != std::string::npos && eq > 0,
        "{}: expected section.key=value (e.g. --set moe.top_k=1)", where);
  const std::string key = assignment.substr(0, eq);
  YAML::Node value = load_yaml(assignment.substr(eq + 1), where, false);

  // Resolve the dotted key one part at a time, so an unknown part lists its section's keys.
  std::string prefix;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part =
        key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    check(!part.empty(), "{}: '{}' has an empty part; expected section.key=value", where, key);
    std::string next = full_key(prefix, part);
    if (!find_field(next) && !is_config_section(next)) unknown_key(where, prefix, part);
    if (dot == std::string::npos) {
      read_key(cfg, next, value, where, ConfigOrigin{where, true});
      resolve_pipeline_schedule(cfg);  // a new virtual_pipeline changes an unset schedule
      return;
    }
    check(!find_field(next), "{}: {} is a value, not a section; cannot set '{}'", where, next, key);
    prefix = next;
    start = dot + 1;
  }
}

}  // namespace origami
