// defines: JsonField (checked, located access to a parsed JSON document), read_json_file()
// Every JSON the project reads (checkpoint index.json, Hugging Face config.json, reports) goes
// through these accessors, so a document that is valid JSON but of the wrong shape is an Error
// naming the file, the field path and what was expected, never an nlohmann exception escaping
// to main. A JsonField is a view: it borrows the document it was made from.
#pragma once
#include <fmt/format.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace origami {

class JsonField {
 public:
  JsonField(const nlohmann::json& j, std::string file, std::string path = "")
      : j_(&j), file_(std::move(file)), path_(std::move(path)) {}

  // "file: field a.b[2].c" for messages.
  std::string where() const {
    return path_.empty() ? file_ : fmt::format("{}: field '{}'", file_, path_);
  }
  const nlohmann::json& raw() const { return *j_; }
  bool is_object() const { return j_->is_object(); }
  bool is_null() const { return j_->is_null(); }

  // An object's member: the field must be an object and have it.
  JsonField at(const std::string& key) const {
    const nlohmann::json& o = object();
    auto it = o.find(key);
    check(it != o.end(), "{}: missing field '{}'", where(), key);
    return child(*it, key);
  }
  std::optional<JsonField> find(const std::string& key) const {
    const nlohmann::json& o = object();
    auto it = o.find(key);
    if (it == o.end()) return std::nullopt;
    return child(*it, key);
  }
  bool contains(const std::string& key) const { return object().contains(key); }
  // Array elements / object members in order.
  void for_each_element(const std::function<void(const JsonField&)>& f) const {
    check(j_->is_array(), "{}: expected an array, found {}", where(), type());
    for (size_t i = 0; i < j_->size(); ++i)
      f(JsonField((*j_)[i], file_, fmt::format("{}[{}]", path_, i)));
  }
  void for_each_member(const std::function<void(const std::string&, const JsonField&)>& f) const {
    const nlohmann::json& o = object();
    for (auto it = o.begin(); it != o.end(); ++it) f(it.key(), child(it.value(), it.key()));
  }

  std::string str() const {
    check(j_->is_string(), "{}: expected a string, found {}", where(), type());
    return j_->get<std::string>();
  }
  int64_t i64() const {
    check(j_->is_number_integer(), "{}: expected an integer, found {}", where(), type());
    if (j_->is_number_unsigned())
      check(j_->get<uint64_t>() <= uint64_t(INT64_MAX), "{}: {} does not fit a signed 64-bit "
            "integer", where(), j_->dump());
    return j_->get<int64_t>();
  }
  uint64_t u64() const {
    check(j_->is_number_unsigned() || (j_->is_number_integer() && j_->get<int64_t>() >= 0),
          "{}: expected a non-negative integer, found {}", where(), type());
    return j_->get<uint64_t>();
  }
  double number() const {
    check(j_->is_number(), "{}: expected a number, found {}", where(), type());
    return j_->get<double>();
  }
  bool boolean() const {
    check(j_->is_boolean(), "{}: expected true or false, found {}", where(), type());
    return j_->get<bool>();
  }
  std::vector<int64_t> i64s() const {
    std::vector<int64_t> out;
    for_each_element([&](const JsonField& e) { out.push_back(e.i64()); });
    return out;
  }

  // "an object", "the string \"x\"", "the number 3", ... (short, for messages).
  std::string type() const {
    if (j_->is_object()) return "an object";
    if (j_->is_array()) return fmt::format("an array of {}", j_->size());
    if (j_->is_string()) return fmt::format("the string {}", shorten(j_->dump()));
    if (j_->is_null()) return "null";
    return fmt::format("{} {}", j_->is_boolean() ? "the boolean" : "the number", j_->dump());
  }

 private:
  const nlohmann::json& object() const {
    check(j_->is_object(), "{}: expected an object, found {}", where(), type());
    return *j_;
  }
  JsonField child(const nlohmann::json& j, const std::string& key) const {
    return JsonField(j, file_, path_.empty() ? key : path_ + "." + key);
  }
  static std::string shorten(std::string s) { return s.size() > 40 ? s.substr(0, 37) + "..." : s; }

  const nlohmann::json* j_;
  std::string file_, path_;
};

// Parses a whole file; an unreadable file or invalid JSON is an Error naming the file and
// `what` it is ("checkpoint index", "Hugging Face config").
inline nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  check(in.good(), "{} '{}' cannot be opened", what, path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{} '{}' is not valid JSON: {}", what, path, e.what());
  }
}

}  // namespace origami
