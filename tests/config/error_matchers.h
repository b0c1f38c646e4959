// defines: error_of(), EXPECT_ERROR_HAS
// Config tests assert on what a user reads: the Error's text must name the file, line and key.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <string>

#include "base/error.h"

namespace origami::testing {

// The message of the Error `fn` throws, or "" if it throws none (the caller then fails).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline ::testing::AssertionResult has_all(const std::string& msg,
                                          std::initializer_list<std::string> parts) {
  if (msg.empty()) return ::testing::AssertionFailure() << "no origami::Error was thrown";
  for (const auto& p : parts)
    if (msg.find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks \"" << p << "\":\n" << msg;
  return ::testing::AssertionSuccess();
}

}  // namespace origami::testing

// EXPECT_ERROR_HAS(statement, {"x.yaml:3", "moe.top_k"}): throws Error containing every part.
#define EXPECT_ERROR_HAS(stmt, ...) \
  EXPECT_TRUE(::origami::testing::has_all(::origami::testing::error_of([&] { stmt; }), __VA_ARGS__))
