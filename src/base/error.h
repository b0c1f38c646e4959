// defines: Error, check(), fail()   (formatting: {fmt} 9, as spdlog uses; GCC 12 has no <format>)
// Every user-facing failure is an Error whose message names what is wrong and where (config
// file and line, dataset path, tensor name, rank). Apps catch it at the top, print it on rank 0
// (or on the rank that saw it) and exit non-zero on every rank.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace origami {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
void check(bool ok, fmt::format_string<Args...> f, Args&&... args) {
  if (!ok) throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace origami
