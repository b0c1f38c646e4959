// nlohmann::json's JSON_ASSERT as an exception in the fuzz build. Its assertions guard undefined
// behaviour (operator[] on a missing key of a const object, ...) that a release build (NDEBUG)
// runs straight into; throwing keeps it a finding (not an origami::Error) that survey mode can
// list and go on from (fuzz_common.h). Precompiled ahead of <nlohmann/json.hpp> in every file.
#pragma once
#include <stdexcept>

namespace origami::fuzz {
struct JsonAssertion : std::logic_error {
  using std::logic_error::logic_error;
};
}  // namespace origami::fuzz

#define JSON_ASSERT(x)                                                                   \
  ((x) ? void(0)                                                                         \
       : throw ::origami::fuzz::JsonAssertion(                                           \
             "nlohmann JSON_ASSERT(" #x ") failed at " __FILE__ ": undefined behaviour in " \
             "a release build"))
