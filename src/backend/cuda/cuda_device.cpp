// defines: the device queries and selection declared in cuda_device.h
// "No device" is an ordinary answer of device_count(); it becomes an Error only where a GPU is
// actually needed, with the CUDA_VISIBLE_DEVICES value in the message since that is the usual
// cause when a node does have GPUs.
#include "backend/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "base/error.h"

namespace origami::cuda {

namespace {
std::string visible_devices() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v ? std::string("'") + v + "'" : std::string("unset");
}
}  // namespace

int device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // clear the error so later calls do not report it again
    return 0;
  }
  CUDA_CHECK(err);
  return count;
}

void require_device(const char* what) {
  check(device_count() > 0,
        "CUDA: {} needs a GPU but none is visible (CUDA_VISIBLE_DEVICES={}); use backend: cpu "
        "on machines without one",
        what, visible_devices());
}

int select_device_for_local_rank(int local_rank) {
  const int count = device_count();
  check(count > 0,
        "CUDA: local rank {} needs a GPU but the device count is 0 (CUDA_VISIBLE_DEVICES={})",
        local_rank, visible_devices());
  check(local_rank >= 0, "CUDA: local rank {} is negative (device count {})", local_rank, count);
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

}  // namespace origami::cuda
