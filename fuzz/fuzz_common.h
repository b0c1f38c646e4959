// defines: fuzz::scratch_dir(), fuzz::write_file(), fuzz::set_input(), fuzz::expect_clean(),
//          fuzz::finding(), fuzz::seed_dir()
// What every fuzz target shares (docs/fuzzing.md). A reader may refuse any input, but only with
// origami::Error, the project's "clear message" exception; any other exception that escapes it
// (nlohmann::json::exception, YAML::Exception, std::bad_alloc, std::out_of_range, ...) would reach
// a program's top level unexplained, so it is a finding: expect_clean() prints it and traps, and
// libFuzzer saves the input as crash-<sha1>. Sanitizer reports are findings too.
#pragma once
#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <typeinfo>

#include "base/error.h"

namespace origami::fuzz {

inline std::filesystem::path& scratch_path() {
  static std::filesystem::path dir;
  return dir;
}

inline void remove_scratch() {
  std::error_code ec;
  if (!scratch_path().empty()) std::filesystem::remove_all(scratch_path(), ec);
}

// A private directory for this process's files (libFuzzer's -fork / -jobs run several processes
// at once), removed at exit and before a finding's trap (a sanitizer's abort leaves it behind).
inline const std::filesystem::path& scratch_dir() {
  std::filesystem::path& dir = scratch_path();
  if (dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "origami-fuzz-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      std::perror("origami fuzz: mkdtemp");
      std::abort();
    }
    dir = tmpl;
    std::atexit(remove_scratch);
  }
  return dir;
}

inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "origami fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

inline std::string current_exception_type() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  if (!t) return "?";
  int status = 0;
  char* name = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : t->name();
  std::free(name);
  return out;
}

// The input being run (set_input()), for survey mode.
inline std::string_view& current_input() {
  static std::string_view input;
  return input;
}
inline void set_input(const uint8_t* data, size_t size) {
  current_input() = {reinterpret_cast<const char*>(data), size};
}

// ORIGAMI_FUZZ_SURVEY=<dir>: findings are recorded instead of trapping, to list the distinct
// ones of a reader that still has many (the held-back targets): the first input of each kind
// (reader, exception type, message up to a ':' with its numbers blanked) is saved as <dir>/finding-<n> with
// finding-<n>.txt saying what escaped, and fuzzing goes on. Sanitizer reports still stop it.
inline bool survey(const char* what, const std::string& type, const std::string& message) {
  static const char* dir = std::getenv("ORIGAMI_FUZZ_SURVEY");
  if (!dir) return false;
  // The kind: numbers blanked, cut at the first ':' (a parse error's position and context).
  std::string key = std::string(what) + " | " + type + " | ";
  for (char c : message.substr(0, std::min<size_t>(message.find(':'), 80))) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      if (key.back() != '#') key += '#';
    } else {
      key += c;
    }
  }
  static std::set<std::string> seen;
  if (!seen.insert(key).second) return true;
  std::filesystem::create_directories(dir);
  const std::string base = std::string(dir) + "/finding-" + std::to_string(::getpid()) + "-" +
                           std::to_string(seen.size());
  const std::string_view in = current_input();
  write_file(base, reinterpret_cast<const uint8_t*>(in.data()), in.size());
  std::ofstream(base + ".txt") << what << " let " << type << " escape: " << message << "\n";
  std::fprintf(stderr, "\n==origami-fuzz== SURVEY: new finding %s: %s let %s escape: %s\n",
               base.c_str(), what, type.c_str(), message.c_str());
  return true;
}

// Runs f(); origami::Error is the reader refusing the input (fine; ORIGAMI_FUZZ_VERBOSE=1 prints
// its message, e.g. to see why a seed is refused). Returns whether f() finished.
template <typename F>
bool expect_clean(const char* what, F&& f) {
  try {
    f();
    return true;
  } catch (const origami::Error& e) {
    static const bool verbose = std::getenv("ORIGAMI_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "origami fuzz: %s refused the input: %s\n", what, e.what());
    return false;
  } catch (const std::exception& e) {
    if (survey(what, current_exception_type(), e.what())) return false;
    std::fprintf(stderr, "\n==origami-fuzz== FINDING: %s let %s escape (not origami::Error): %s\n",
                 what, current_exception_type().c_str(), e.what());
  } catch (...) {
    if (survey(what, current_exception_type(), "(not a std::exception)")) return false;
    std::fprintf(stderr, "\n==origami-fuzz== FINDING: %s let %s escape (not a std::exception)\n",
                 what, current_exception_type().c_str());
  }
  remove_scratch();
  __builtin_trap();
}

// A violated invariant on an accepted input (e.g. a config that does not survive to_yaml).
[[noreturn]] inline void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "\n==origami-fuzz== FINDING: %s: %s\n", what, detail.c_str());
  remove_scratch();
  __builtin_trap();
}

// ORIGAMI_FUZZ_WRITE_SEEDS=<dir>: a target writes the seeds it generates (files made by the
// project's own writers, see tools/fuzz.sh) into <dir> and exits instead of fuzzing.
inline const char* seed_dir() { return std::getenv("ORIGAMI_FUZZ_WRITE_SEEDS"); }

inline void copy_seed(const std::filesystem::path& from, const std::string& name) {
  std::filesystem::create_directories(seed_dir());
  std::filesystem::copy_file(from, std::filesystem::path(seed_dir()) / name,
                             std::filesystem::copy_options::overwrite_existing);
}

}  // namespace origami::fuzz
