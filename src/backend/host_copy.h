// defines: host_copy() — backend memory into a host vector, for the host reference paths
// (the MoE variants' arithmetic on host copies of the rows, like router_host_fallback.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace origami {

template <typename T>
std::vector<T> host_copy(Backend& be, const T* p, int64_t n) {
  std::vector<T> h(static_cast<size_t>(n));
  be.copy_to_host(h.data(), p, size_t(n) * sizeof(T));
  return h;
}

}  // namespace origami
