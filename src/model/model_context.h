// defines: ModelContext, ModelGroups, MicroBatchShape, grow_rows()
// What every module is built from: the backend that runs its kernels, the config it was
// described by, the static micro-batch shape its activation buffers are sized for, and the
// process groups it exchanges tokens over.
#pragma once
#include <algorithm>
#include <cstdint>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "config/config.h"
#include "tensor/tensor.h"

namespace origami {

struct MicroBatchShape {
  int64_t batch = 1;   // sequences per micro-batch
  int64_t seq = 1;     // tokens per sequence
  int64_t tokens() const { return batch * seq; }
};

// The process groups a module talks over; null = this rank alone (no exchange).
struct ModelGroups {
  const Communicator* ep = nullptr;   // expert parallel: ranks holding different experts
  const Communicator* etp = nullptr;  // expert tensor parallel: ranks splitting one expert's FFN
  // Ranks whose tokens are balanced together in global_batch mode (the stage's TP x DP x CP).
  const Communicator* balance = nullptr;
};

struct ModelContext {
  Backend& backend;
  const Config& config;
  MicroBatchShape shape;
  ModelGroups groups;
  int ep_size() const { return groups.ep ? groups.ep->size() : 1; }
  int ep_rank() const { return groups.ep ? groups.ep->rank() : 0; }
  int etp_size() const { return groups.etp ? groups.etp->size() : 1; }
  int etp_rank() const { return groups.etp ? groups.etp->rank() : 0; }
};

// Buffers whose row count depends on routing (dropless expert inputs) grow to the largest count
// seen and are then reused: no allocation in the steady state, no fixed worst case up front.
template <typename T>
void grow_rows(Backend& be, TensorOf<T>& t, int64_t rows, int64_t cols) {
  if (t.empty() || t.dim(0) < rows) t = TensorOf<T>::zeros(be, {std::max<int64_t>(rows, 1), cols});
}

}  // namespace origami
