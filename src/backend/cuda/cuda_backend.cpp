// defines: CudaBackend construction, memory and copies, the scratch buffer, make_cuda_backend()
// Allocations are zeroed (the Backend contract) with an async memset on the backend's stream.
// Copies use cudaMemcpyDefault so that host or device pointers work in either argument (unified
// addressing), and the host-facing copies wait for the stream: the caller may reuse or read its
// host buffer as soon as they return.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>

#include "backend/cuda/cuda_backend_factory.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_device.h"
#include "base/error.h"

namespace origami::cuda {

namespace {
constexpr size_t kWorkspaceBytes = size_t(64) << 20;  // cuBLASLt's split-K / stream-K workspace

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLAS error {} ({}) in {}", int(s), cublasGetStatusString(s), what);
}
}  // namespace

const char* to_string(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::fp32: return "fp32";
    case GemmPrecision::tf32: return "tf32";
    case GemmPrecision::bf16: return "bf16";
  }
  return "?";
}

CudaBackend::CudaBackend(int local_rank, GemmPrecision precision) : precision_(precision) {
  device_ = select_device_for_local_rank(local_rank);
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  alloc_ = std::make_unique<CachingAllocator>(stream_);
  check_cublas(cublasLtCreate(&lt_), "cublasLtCreate");
  check_cublas(cublasCreate(&blas_), "cublasCreate");
  check_cublas(cublasSetStream(blas_, stream_), "cublasSetStream");
  // The grouped GEMM takes per-group alpha/beta from host arrays.
  check_cublas(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
  CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  workspace_bytes_ = kWorkspaceBytes;
  CUDA_CHECK(cudaMallocHost(&host_result_, sizeof(double) * 2));
}

CudaBackend::~CudaBackend() {
  // Best effort, no throwing: outstanding work finishes before the handles go.
  cudaStreamSynchronize(stream_);
  plans_.clear();
  if (scratch_) alloc_->deallocate(scratch_);
  if (staging_) alloc_->deallocate(staging_);
  for (auto& [p, c] : weights_)
    if (c.bf16) alloc_->deallocate(c.bf16);
  alloc_.reset();
  cudaFree(workspace_);
  cudaFreeHost(host_result_);
  if (blas_) cublasDestroy(blas_);
  if (lt_) cublasLtDestroy(lt_);
  cudaStreamDestroy(stream_);
}

void* CudaBackend::allocate(size_t bytes) {
  void* p = alloc_->allocate(bytes);
  CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 1), stream_));
  return p;
}

void CudaBackend::deallocate(void* p) { alloc_->deallocate(p); }

void CudaBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  if (!bytes) return;
  CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDefault, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  if (!bytes) return;
  invalidate_weights(dst, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyDefault, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (!bytes || dst == src) return;
  invalidate_weights(dst, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

bool CudaBackend::is_device_memory(const void* p) const {
  if (!p) return false;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();  // plain host memory on old drivers: clear the sticky error
    return false;
  }
  return attr.type == cudaMemoryTypeDevice;
}

void* CudaBackend::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    // Stream-ordered free and allocate: work already queued on the old buffer still sees it.
    if (scratch_) alloc_->deallocate(scratch_);
    scratch_bytes_ = std::max(bytes, scratch_bytes_ * 2);
    scratch_ = alloc_->allocate(scratch_bytes_);
  }
  return scratch_;
}

std::unique_ptr<Backend> make_cuda_backend(int local_rank, bool bf16) {
  return std::make_unique<CudaBackend>(local_rank, bf16 ? GemmPrecision::bf16 : GemmPrecision::fp32);
}

}  // namespace origami::cuda
