// defines: cuda::CudaTimer
// Times GPU work as the device sees it (cudaEvent pairs recorded on a stream), not as the host
// sees it: kernel launches return immediately, so host clocks around them measure nothing.
#pragma once
#include <cuda_runtime.h>

namespace origami::cuda {

class CudaTimer {
 public:
  explicit CudaTimer(cudaStream_t stream = nullptr);  // throws Error if there is no GPU
  ~CudaTimer();
  CudaTimer(const CudaTimer&) = delete;
  CudaTimer& operator=(const CudaTimer&) = delete;

  void start();       // records the start event on the stream
  void stop();        // records the stop event on the stream
  float elapsed_ms();  // waits for the stop event; Error if start/stop were not both recorded

 private:
  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  bool started_ = false, stopped_ = false;
};

}  // namespace origami::cuda
