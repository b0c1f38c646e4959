// defines: Error, check(), fail()   (formatting: {fmt} 9, as spdlog uses; GCC 12 has no <format>)
// Every user-facing failure is an Error whose message names what is wrong and where (config
// file and line, dataset path, tensor name, rank). Apps catch it at the top, print it on rank 0
// (or on the rank that saw it) and exit non-zero on every rank.
#pragma once
#include <cxxabi.h>
#include <fmt/format.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <typeinfo>

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

// The readable type of an exception the apps did not expect (their last-resort handlers print
// "internal error (nlohmann::json_abi_v3_11_2::detail::type_error): ..." in one line).
inline std::string exception_type(const std::exception& e) {
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : typeid(e).name();
  std::free(name);
  return out;
}

}  // namespace origami
