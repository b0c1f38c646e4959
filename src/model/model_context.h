// defines: ModelContext, MicroBatchShape
// What every module is built from: the backend that runs its kernels, the config it was
// described by, and the static micro-batch shape its activation buffers are sized for.
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "config/config.h"

namespace origami {

struct MicroBatchShape {
  int64_t batch = 1;   // sequences per micro-batch
  int64_t seq = 1;     // tokens per sequence
  int64_t tokens() const { return batch * seq; }
};

struct ModelContext {
  Backend& backend;
  const Config& config;
  MicroBatchShape shape;
};

}  // namespace origami
