// DeviceStagedCommunicator without a GPU: a CPU backend that calls its own allocations "device
// memory" makes every collective take the staging path (copy out, MPI on host buffers, copy
// back). Each collective must give what plain MPI gives on the same data, host buffers must
// pass straight through, and split() must keep staging. The GPU tests run the same class with
// real device memory (mpi_test_cuda_training.cpp).
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "backend/cpu/cpu_backend.h"
#include "comm/communicator.h"
#include "train/device_staged_communicator.h"

namespace origami {
namespace {

class PretendDevice final : public CpuBackend {
 public:
  void* allocate(size_t bytes) override {
    void* p = CpuBackend::allocate(bytes);
    ranges_[reinterpret_cast<uintptr_t>(p)] = std::max<size_t>(bytes, 1);
    return p;
  }
  void deallocate(void* p) override {
    ranges_.erase(reinterpret_cast<uintptr_t>(p));
    CpuBackend::deallocate(p);
  }
  bool is_device_memory(const void* p) const override {
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = ranges_.upper_bound(a);
    if (it == ranges_.begin()) return false;
    --it;
    return a < it->first + it->second;
  }
  void copy_to_host(void* d, const void* s, size_t n) override {
    ++staged_out;
    CpuBackend::copy_to_host(d, s, n);
  }
  int staged_out = 0;

 private:
  std::map<uintptr_t, size_t> ranges_;
};

struct Buf {
  PretendDevice& be;
  float* p;
  size_t n;
  Buf(PretendDevice& b, const std::vector<float>& v) : be(b), n(v.size()) {
    p = static_cast<float*>(b.allocate(std::max<size_t>(n, 1) * 4));
    std::copy(v.begin(), v.end(), p);
  }
  ~Buf() { be.deallocate(p); }
  std::vector<float> get() const { return std::vector<float>(p, p + n); }
};

std::vector<float> data(int64_t n, int rank, int salt) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float((i * 5 + rank * 11 + salt) % 23);
  return v;
}

TEST(DeviceStaging, EveryCollectiveMatchesMpiOnHostBuffers) {
  auto world = make_mpi_world();
  PretendDevice be;
  DeviceStagedCommunicator staged(*world, be);
  const int R = world->size(), r = world->rank();
  {  // allreduce, in place and not
    auto h = data(100, r, 1);
    Buf d(be, h), out(be, std::vector<float>(100, -1.f));
    std::vector<float> ref(100);
    world->allreduce(h.data(), ref.data(), 100, CommDType::f32, ReduceOp::sum);
    staged.allreduce(d.p, out.p, 100, CommDType::f32, ReduceOp::sum);
    EXPECT_EQ(out.get(), ref);
    staged.allreduce(d.p, d.p, 100, CommDType::f32, ReduceOp::max);
    world->allreduce(h.data(), h.data(), 100, CommDType::f32, ReduceOp::max);
    EXPECT_EQ(d.get(), h);
  }
  {  // broadcast from the last rank
    auto h = data(50, r, 2);
    Buf d(be, h);
    world->broadcast(h.data(), 50, CommDType::f32, R - 1);
    staged.broadcast(d.p, 50, CommDType::f32, R - 1);
    EXPECT_EQ(d.get(), h);
  }
  std::vector<int64_t> counts(static_cast<size_t>(R)), displs(static_cast<size_t>(R));
  int64_t total = 0;
  for (int i = 0; i < R; ++i) counts[size_t(i)] = 2 + 3 * i, displs[size_t(i)] = total, total += counts[size_t(i)] + 1;
  {  // allgatherv with a gap after every block: the gaps keep their values
    auto mine = data(counts[size_t(r)], r, 3);
    std::vector<float> ref(static_cast<size_t>(total), 7.f);
    world->allgatherv(mine.data(), counts[size_t(r)], ref.data(), counts, displs, CommDType::f32);
    Buf s(be, mine), d(be, std::vector<float>(static_cast<size_t>(total), 7.f));
    staged.allgatherv(s.p, counts[size_t(r)], d.p, counts, displs, CommDType::f32);
    EXPECT_EQ(d.get(), ref);
  }
  {  // allgather, reduce_scatter, alltoall (even blocks)
    auto h = data(6, r, 4), all = data(6 * R, r, 5);
    std::vector<float> g(static_cast<size_t>(6 * R)), rs(6), a2a(static_cast<size_t>(6 * R));
    world->allgather(h.data(), g.data(), 6, CommDType::f32);
    world->reduce_scatter(all.data(), rs.data(), 6, CommDType::f32, ReduceOp::sum);
    world->alltoall(all.data(), a2a.data(), 6, CommDType::f32);
    Buf dh(be, h), dall(be, all), dg(be, std::vector<float>(g.size())), drs(be, std::vector<float>(6)),
        da(be, std::vector<float>(a2a.size()));
    staged.allgather(dh.p, dg.p, 6, CommDType::f32);
    staged.reduce_scatter(dall.p, drs.p, 6, CommDType::f32, ReduceOp::sum);
    staged.alltoall(dall.p, da.p, 6, CommDType::f32);
    EXPECT_EQ(dg.get(), g);
    EXPECT_EQ(drs.get(), rs);
    EXPECT_EQ(da.get(), a2a);
  }
  {  // reduce_scatterv and alltoallv with uneven blocks
    std::vector<int64_t> rc(static_cast<size_t>(R));
    for (int i = 0; i < R; ++i) rc[size_t(i)] = 1 + i;
    const int64_t all_n = std::accumulate(rc.begin(), rc.end(), int64_t{0});
    auto all = data(all_n, r, 6);
    std::vector<float> ref(static_cast<size_t>(rc[size_t(r)]));
    world->reduce_scatterv(all.data(), ref.data(), rc, CommDType::f32, ReduceOp::sum);
    Buf s(be, all), d(be, std::vector<float>(ref.size()));
    staged.reduce_scatterv(s.p, d.p, rc, CommDType::f32, ReduceOp::sum);
    EXPECT_EQ(d.get(), ref);

    std::vector<int64_t> sc(static_cast<size_t>(R)), sd(static_cast<size_t>(R)), rcv(static_cast<size_t>(R)), rd(static_cast<size_t>(R));
    int64_t st = 0, rt = 0;
    for (int i = 0; i < R; ++i) {
      sc[size_t(i)] = r + i + 1, sd[size_t(i)] = st, st += sc[size_t(i)];
      rcv[size_t(i)] = i + r + 1, rd[size_t(i)] = rt, rt += rcv[size_t(i)];
    }
    auto sendh = data(st, r, 7);
    std::vector<float> a2a(static_cast<size_t>(rt));
    world->alltoallv(sendh.data(), sc, sd, a2a.data(), rcv, rd, CommDType::f32);
    Buf ds(be, sendh), dr(be, std::vector<float>(a2a.size()));
    staged.alltoallv(ds.p, sc, sd, dr.p, rcv, rd, CommDType::f32);
    EXPECT_EQ(dr.get(), a2a);
  }
  {  // send / recv around a ring
    auto h = data(9, r, 8);
    Buf d(be, h), got(be, std::vector<float>(9));
    const int next = (r + 1) % R, prev = (r + R - 1) % R;
    if (r % 2 == 0) {
      staged.send(d.p, 9, CommDType::f32, next, 3);
      staged.recv(got.p, 9, CommDType::f32, prev, 3);
    } else {
      staged.recv(got.p, 9, CommDType::f32, prev, 3);
      staged.send(d.p, 9, CommDType::f32, next, 3);
    }
    EXPECT_EQ(got.get(), data(9, prev, 8));
  }
  EXPECT_GT(be.staged_out, 0) << "the device path was taken";
  // Host buffers pass straight through; split() keeps staging.
  const int before = be.staged_out;
  int64_t x = r + 1;
  staged.allreduce(&x, &x, 1, CommDType::i64, ReduceOp::sum);
  EXPECT_EQ(x, int64_t(R) * (R + 1) / 2);
  EXPECT_EQ(be.staged_out, before);
  auto half = staged.split(r % 2, r, "half");
  auto h = data(4, r, 9);
  Buf d(be, h);
  half->allreduce(d.p, d.p, 4, CommDType::f32, ReduceOp::sum);
  EXPECT_GT(be.staged_out, before);
  auto plain_half = world->split(r % 2, r, "half-ref");
  plain_half->allreduce(h.data(), h.data(), 4, CommDType::f32, ReduceOp::sum);
  EXPECT_EQ(d.get(), h);
}

}  // namespace
}  // namespace origami
