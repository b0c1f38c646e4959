// CUDA embedding forward (a gather, padding rows zero) and backward (accumulating repeated ids)
// against the CPU reference.
#ifdef ORIGAMI_WITH_CUDA
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda_test_util.h"

namespace origami::cuda {
namespace {

using namespace origami::cuda::testing;

TEST_F(CudaOps, EmbeddingForwardAndAccumulatingBackward) {
  const int64_t n = 300, dim = 96, vocab = 50;
  std::vector<int32_t> ids(n);
  std::mt19937 gen(++seed);
  for (auto& i : ids) i = int32_t(gen() % vocab);
  ids[7] = -1;  // padding row
  auto table = randn(size_t(vocab * dim), ++seed), dout = randn(size_t(n * dim), ++seed);
  Buf<int32_t> cid(*cpu, ids), gid(*gpu, ids);
  Buf<float> ct(*cpu, table), gt(*gpu, table), co(*cpu, size_t(n * dim)), go(*gpu, size_t(n * dim));
  Buf<float> cd(*cpu, dout), gd(*gpu, dout), cdt(*cpu, table), gdt(*gpu, table);
  go.poison();
  cpu->embedding_forward(cid.p, ct.p, co.p, n, dim), gpu->embedding_forward(gid.p, gt.p, go.p, n, dim);
  // A copy of table rows: exact.
  expect_close(go.get(), co.get(), 0, "embedding_forward");
  cpu->embedding_backward(cd.p, cid.p, cdt.p, n, dim), gpu->embedding_backward(gd.p, gid.p, gdt.p, n, dim);
  // Both add the repeated ids' rows in token order in fp32 onto the same table: identical
  // unless a compiler reorders; 1e-6 is one ulp of slack on the ~6 additions per entry.
  expect_close(gdt.get(), cdt.get(), 1e-6, "embedding_backward (accumulates)");
}

}  // namespace
}  // namespace origami::cuda
#endif
