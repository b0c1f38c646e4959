// Strict YAML scalar readers and writers for the config (see yaml_values.h). yaml-cpp's own
// as<T>() is too lenient for config errors (it reads "yes" as a bool and "0x10" as an int), so
// numbers go through std::from_chars on the scalar text, and quoted scalars are never numbers.
#include "config/yaml_values.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include "base/error.h"

namespace origami {
namespace {

// yaml-cpp tags a quoted scalar "!" and a plain one "?": "8" in quotes is a string, not 8.
bool is_quoted(const YAML::Node& node) { return node.Tag() == "!"; }

[[noreturn]] void wrong_type(const YAML::Node& node, const std::string& where,
                             const std::string& key, const char* expected) {
  fail("{}: {}: expected {}, found {}", where, key, expected, describe_node(node));
}

template <typename T>
bool parse_whole(const std::string& text, T& out) {
  std::string_view s = text;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

}  // namespace

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Sequence:
      return fmt::format("a list of {} item(s)", node.size());
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Scalar:
      break;
  }
  if (is_quoted(node)) return fmt::format("{} (a quoted string)", yaml_quote(node.Scalar()));
  return fmt::format("'{}'", node.Scalar());
}

int64_t read_int(const YAML::Node& node, const std::string& where, const std::string& key) {
  int64_t v = 0;
  if (!node.IsScalar() || is_quoted(node)) wrong_type(node, where, key, "an integer");
  if (!parse_whole(node.Scalar(), v)) {
    double d = 0;
    if (parse_whole(node.Scalar(), d) && std::isfinite(d) && std::abs(d) < 9.2e18)
      wrong_type(node, where, key, "an integer (no fraction or exponent)");
    wrong_type(node, where, key, "an integer");
  }
  return v;
}

uint64_t read_uint(const YAML::Node& node, const std::string& where, const std::string& key) {
  uint64_t v = 0;
  if (!node.IsScalar() || is_quoted(node) || !parse_whole(node.Scalar(), v))
    wrong_type(node, where, key, "a non-negative integer below 2^64");
  return v;
}

double read_number(const YAML::Node& node, const std::string& where, const std::string& key) {
  double v = 0;
  if (!node.IsScalar() || is_quoted(node) || !parse_whole(node.Scalar(), v) || !std::isfinite(v))
    wrong_type(node, where, key, "a finite number");
  return v;
}

bool read_bool(const YAML::Node& node, const std::string& where, const std::string& key) {
  if (node.IsScalar() && !is_quoted(node)) {
    const std::string& s = node.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  wrong_type(node, where, key, "true or false");
}

std::string read_string(const YAML::Node& node, const std::string& where, const std::string& key) {
  if (node.IsNull()) return "";
  if (!node.IsScalar()) wrong_type(node, where, key, "a string");
  return node.Scalar();
}

std::string yaml_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

std::string yaml_number(double x) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  check(ec == std::errc(), "yaml_number: cannot format {}", x);
  std::string s(buf, end);
  // YAML 1.1 readers (PyYAML) take "1e-05" for a string: give every number a '.'.
  auto e = s.find('e');
  if (s.find('.') == std::string::npos && std::isfinite(x)) {
    if (e == std::string::npos)
      s += ".0";
    else
      s.insert(e, ".0");
  }
  return s;
}

int edit_distance(const std::string& a, const std::string& b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = int(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diag = row[0];
    row[0] = int(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace origami
