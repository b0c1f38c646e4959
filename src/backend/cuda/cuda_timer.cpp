// defines: cuda::CudaTimer (see cuda_timer.h)
#include "backend/cuda/cuda_timer.h"

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_device.h"
#include "base/error.h"

namespace origami::cuda {

CudaTimer::CudaTimer(cudaStream_t stream) : stream_(stream) {
  require_device("CudaTimer");
  CUDA_CHECK(cudaEventCreate(&start_));
  CUDA_CHECK(cudaEventCreate(&stop_));
}

CudaTimer::~CudaTimer() {
  if (start_) cudaEventDestroy(start_);
  if (stop_) cudaEventDestroy(stop_);
}

void CudaTimer::start() {
  CUDA_CHECK(cudaEventRecord(start_, stream_));
  started_ = true;
  stopped_ = false;
}

void CudaTimer::stop() {
  check(started_, "CudaTimer::stop() called before start()");
  CUDA_CHECK(cudaEventRecord(stop_, stream_));
  stopped_ = true;
}

float CudaTimer::elapsed_ms() {
  check(started_ && stopped_, "CudaTimer::elapsed_ms() needs start() then stop() (started: {}, "
        "stopped: {})", started_, stopped_);
  CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0.f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

}  // namespace origami::cuda
