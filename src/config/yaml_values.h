// defines: read_int(), read_uint(), read_number(), read_bool(), read_string(), describe_node(),
//          yaml_quote(), yaml_number(), edit_distance()
// Strict readers of YAML scalars for the config loader: an integer key rejects 2.5, "8" (quoted)
// and [8]; a bool key rejects 1 and "yes". Every error reads "where: key: expected X, found Y".
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>

namespace origami {

// "'two' (a string)", "\"8\" (a quoted string)", "a list", "a map", "null"
std::string describe_node(const YAML::Node& node);

int64_t read_int(const YAML::Node& node, const std::string& where, const std::string& key);
uint64_t read_uint(const YAML::Node& node, const std::string& where, const std::string& key);
double read_number(const YAML::Node& node, const std::string& where, const std::string& key);
bool read_bool(const YAML::Node& node, const std::string& where, const std::string& key);
// Any scalar; null reads as "" (an unset path).
std::string read_string(const YAML::Node& node, const std::string& where, const std::string& key);

// Double-quoted YAML string with escapes, so "null", "" or "8" stay strings when read back.
std::string yaml_quote(const std::string& s);
// Shortest text that reads back to the same double, always with '.' or 'e' ("1.0e-05", "0.02").
std::string yaml_number(double x);

// Levenshtein distance, for "did you mean" suggestions on unknown keys.
int edit_distance(const std::string& a, const std::string& b);

}  // namespace origami
