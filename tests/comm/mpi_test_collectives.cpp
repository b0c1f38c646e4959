// Multi-rank tests of MpiCommunicator: every collective with rank-dependent data whose result
// each rank can compute on its own (sums, uneven counts with zeros, gaps in displacements that
// must stay untouched), point-to-point in a ring, barrier ordering, split, and argument errors.
#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <thread>

#include "base/error.h"
#include "comm/communicator.h"

namespace origami {
namespace {

class Collectives : public ::testing::Test {
 protected:
  void SetUp() override {
    world = make_mpi_world();
    rank = world->rank();
    size = world->size();
  }
  std::unique_ptr<Communicator> world;
  int rank = 0, size = 1;
};

TEST_F(Collectives, WorldIsEveryRankInOrder) {
  EXPECT_EQ(world->name(), "world");
  std::vector<int> all(size);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(world->world_ranks(), all);
}

TEST_F(Collectives, AllreduceInPlace) {
  const int n = 5;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = float(rank + 0.5 * i);
  world->allreduce<float>(x);
  for (int i = 0; i < n; ++i) EXPECT_EQ(x[i], float(size * (size - 1) / 2 + size * 0.5 * i)) << i;

  std::vector<int32_t> m(n);
  for (int i = 0; i < n; ++i) m[i] = (rank * 7 + i * 3) % 5 - rank;
  world->allreduce<int32_t>(m, ReduceOp::max);
  for (int i = 0; i < n; ++i) {
    int want = INT32_MIN;
    for (int q = 0; q < size; ++q) want = std::max(want, (q * 7 + i * 3) % 5 - q);
    EXPECT_EQ(m[i], want) << i;
  }
  EXPECT_EQ(world->allreduce_scalar<int64_t>(-rank, ReduceOp::min), -(size - 1));
  EXPECT_EQ(world->allreduce_scalar<uint8_t>(uint8_t(1)), uint8_t(size));
}

TEST_F(Collectives, AllreduceOutOfPlace) {
  std::vector<double> send{double(rank), 1.0, -double(rank) * rank};
  std::vector<double> recv(3, -99.0);
  world->allreduce(send.data(), recv.data(), 3, CommDType::f64, ReduceOp::sum);
  double squares = 0;
  for (int q = 0; q < size; ++q) squares += double(q) * q;
  EXPECT_EQ(recv, (std::vector<double>{size * (size - 1) / 2.0, double(size), -squares}));
  EXPECT_EQ(send[0], double(rank));  // the input is left alone
  std::vector<int64_t> big{int64_t(rank) << 40, 3};
  std::vector<int64_t> out(2);
  world->allreduce(big.data(), out.data(), 2, CommDType::i64, ReduceOp::max);
  EXPECT_EQ(out, (std::vector<int64_t>{int64_t(size - 1) << 40, 3}));
}

TEST_F(Collectives, Broadcast) {
  const int root = size - 1;
  std::vector<int64_t> x(4);
  for (int i = 0; i < 4; ++i) x[i] = rank == root ? 1000 + i : -1;
  world->broadcast(x.data(), 4, CommDType::i64, root);
  EXPECT_EQ(x, (std::vector<int64_t>{1000, 1001, 1002, 1003}));
}

TEST_F(Collectives, Allgather) {
  const int k = 3;
  std::vector<int32_t> send(k), recv(size * k, -1);
  for (int j = 0; j < k; ++j) send[j] = rank * 10 + j;
  world->allgather(send.data(), recv.data(), k, CommDType::i32);
  for (int q = 0; q < size; ++q)
    for (int j = 0; j < k; ++j) EXPECT_EQ(recv[q * k + j], q * 10 + j);
}

TEST_F(Collectives, AllgathervUnevenCountsWithGaps) {
  // Rank q sends q % 3 elements (rank 0 sends none); one slot between blocks must stay untouched.
  std::vector<int64_t> counts(size), displs(size);
  int64_t total = 0;
  for (int q = 0; q < size; ++q) {
    counts[q] = q % 3;
    displs[q] = total;
    total += counts[q] + 1;
  }
  std::vector<float> send(counts[rank]);
  for (int j = 0; j < counts[rank]; ++j) send[j] = float(100 * rank + j);
  std::vector<float> recv(total, -1.f);
  world->allgatherv(send.data(), counts[rank], recv.data(), counts, displs, CommDType::f32);
  for (int q = 0; q < size; ++q) {
    for (int j = 0; j < counts[q]; ++j) EXPECT_EQ(recv[displs[q] + j], float(100 * q + j));
    EXPECT_EQ(recv[displs[q] + counts[q]], -1.f) << "gap after rank " << q << " was written";
  }
}

TEST_F(Collectives, ReduceScatter) {
  const int k = 2;
  std::vector<double> send(size * k), recv(k, -1);
  for (int i = 0; i < size; ++i)
    for (int j = 0; j < k; ++j) send[i * k + j] = rank + 10.0 * i + j;
  world->reduce_scatter(send.data(), recv.data(), k, CommDType::f64, ReduceOp::sum);
  for (int j = 0; j < k; ++j)
    EXPECT_EQ(recv[j], size * (size - 1) / 2.0 + size * (10.0 * rank + j)) << j;
  world->reduce_scatter(send.data(), recv.data(), k, CommDType::f64, ReduceOp::max);
  for (int j = 0; j < k; ++j) EXPECT_EQ(recv[j], size - 1 + 10.0 * rank + j) << j;
}

TEST_F(Collectives, ReduceScatterUnevenBlocks) {
  // Rank q receives block q of q % 3 elements (zeros included), summed over all ranks.
  std::vector<int64_t> counts(size);
  int64_t total = 0;
  for (int q = 0; q < size; ++q) total += counts[q] = q % 3;
  std::vector<float> send(total);
  for (int64_t i = 0; i < total; ++i) send[i] = float(rank + 1) * float(i + 1);
  std::vector<float> recv(counts[rank] + 1, -1.f);
  world->reduce_scatterv(send.data(), recv.data(), counts, CommDType::f32, ReduceOp::sum);
  int64_t first = 0;
  for (int q = 0; q < rank; ++q) first += counts[q];
  const float ranks_sum = float(size * (size + 1) / 2);
  for (int64_t j = 0; j < counts[rank]; ++j) EXPECT_EQ(recv[j], ranks_sum * float(first + j + 1));
  EXPECT_EQ(recv[counts[rank]], -1.f) << "wrote past its block";
}

// Float reduce-scatters of 1 MiB and more, and all-reduces of 4 MiB and more, go through an
// all-to-all and a local sum (mpi_communicator.cpp); these sizes take that path. Small integers
// keep every sum exact in any order.
TEST_F(Collectives, LargeFloatSumsAreExact) {
  const int64_t k = int64_t(1) << 18;  // elements per rank's block: 1 MiB of floats
  std::vector<float> send(size_t(size * k));
  for (int64_t i = 0; i < size * k; ++i) send[size_t(i)] = float(rank + i % 7);
  const auto expect = [&](int64_t i) { return float(size * (size - 1) / 2 + size * (i % 7)); };

  std::vector<float> block(size_t(k), -1.f);
  world->reduce_scatter(send.data(), block.data(), k, CommDType::f32, ReduceOp::sum);
  for (int64_t j = 0; j < k; ++j) ASSERT_EQ(block[size_t(j)], expect(rank * k + j)) << j;

  // Uneven blocks (one empty), in f64.
  std::vector<int64_t> counts(static_cast<size_t>(size));
  int64_t total = 0;
  for (int q = 0; q < size; ++q) total += counts[size_t(q)] = q == 1 ? 0 : k + q;
  std::vector<double> dsend(static_cast<size_t>(total));
  std::vector<double> dblock(size_t(counts[size_t(rank)]) + 1, -1.0);
  for (int64_t i = 0; i < total; ++i) dsend[size_t(i)] = double(rank + i % 7);
  world->reduce_scatterv(dsend.data(), dblock.data(), counts, CommDType::f64, ReduceOp::sum);
  int64_t first = 0;
  for (int q = 0; q < rank; ++q) first += counts[size_t(q)];
  for (int64_t j = 0; j < counts[size_t(rank)]; ++j)
    ASSERT_EQ(dblock[size_t(j)], double(expect(first + j))) << j;
  EXPECT_EQ(dblock.back(), -1.0) << "wrote past its block";

  // All-reduce, out of place and in place: 5 MiB, not a multiple of the group size.
  const int64_t n = 5 * k + 5;
  std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n), -1.f);
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(rank + i % 7);
  world->allreduce(x.data(), y.data(), n, CommDType::f32, ReduceOp::sum);
  world->allreduce<float>(x);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(y[size_t(i)], expect(i)) << i;
    ASSERT_EQ(x[size_t(i)], expect(i)) << i;
  }
}

TEST_F(Collectives, Alltoall) {
  const int k = 2;
  std::vector<int32_t> send(size * k), recv(size * k, -1);
  for (int i = 0; i < size; ++i)
    for (int j = 0; j < k; ++j) send[i * k + j] = 1000 * rank + 10 * i + j;
  world->alltoall(send.data(), recv.data(), k, CommDType::i32);
  for (int i = 0; i < size; ++i)
    for (int j = 0; j < k; ++j) EXPECT_EQ(recv[i * k + j], 1000 * i + 10 * rank + j);
}

TEST_F(Collectives, AlltoallvUnevenCountsIncludingZeros) {
  // Rank a sends (a + 2b) % 3 elements to rank b: some pairs exchange nothing.
  auto count = [](int a, int b) { return int64_t((a + 2 * b) % 3); };
  std::vector<int64_t> sc(size), sd(size), rc(size), rd(size);
  int64_t stotal = 0, rtotal = 0;
  for (int q = 0; q < size; ++q) {
    sc[q] = count(rank, q);
    sd[q] = stotal;
    stotal += sc[q];
    rc[q] = count(q, rank);
    rd[q] = rtotal;
    rtotal += rc[q];
  }
  std::vector<int64_t> send(stotal), recv(rtotal, -1);
  for (int q = 0; q < size; ++q)
    for (int j = 0; j < sc[q]; ++j) send[sd[q] + j] = 10000 * rank + 100 * q + j;
  world->alltoallv(send.data(), sc, sd, recv.data(), rc, rd, CommDType::i64);
  for (int q = 0; q < size; ++q)
    for (int j = 0; j < rc[q]; ++j) EXPECT_EQ(recv[rd[q] + j], 10000 * q + 100 * rank + j);
}

TEST_F(Collectives, SendRecvRing) {
  if (size < 2) GTEST_SKIP() << "a ring needs two ranks";
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  std::vector<uint8_t> out{uint8_t(rank), uint8_t(2 * rank)}, in(2, 255);
  // Even ranks send first, odd ranks receive first, so blocking sends cannot all wait.
  if (rank % 2 == 0) {
    world->send(out.data(), 2, CommDType::u8, next, 7);
    world->recv(in.data(), 2, CommDType::u8, prev, 7);
  } else {
    world->recv(in.data(), 2, CommDType::u8, prev, 7);
    world->send(out.data(), 2, CommDType::u8, next, 7);
  }
  EXPECT_EQ(in, (std::vector<uint8_t>{uint8_t(prev), uint8_t(2 * prev)}));
}

TEST_F(Collectives, BarrierWaitsForTheLastRank) {
  using Clock = std::chrono::steady_clock;  // one system-wide clock for all local ranks
  auto now_ns = [] {
    return int64_t(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count());
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(20 * (rank == size - 1)));
  const int64_t entered = now_ns();
  world->barrier();
  const int64_t left = now_ns();
  const int64_t last_entry = world->allreduce_scalar(entered, ReduceOp::max);
  EXPECT_GE(left, last_entry);
}

TEST_F(Collectives, SplitOrdersByKeyAndIsolatesGroups) {
  const int color = rank % 2;
  auto half = world->split(color, -rank, "half");  // key -rank: reverse order
  std::vector<int> members;
  for (int q = size - 1; q >= 0; --q)
    if (q % 2 == color) members.push_back(q);
  EXPECT_EQ(half->name(), "half");
  EXPECT_EQ(half->size(), int(members.size()));
  EXPECT_EQ(half->world_ranks(), members);
  EXPECT_EQ(half->world_ranks().at(half->rank()), rank);
  EXPECT_EQ(half->allreduce_scalar<int64_t>(rank),
            std::accumulate(members.begin(), members.end(), int64_t(0)));
  // A split of a split keeps world ranks.
  auto single = half->split(half->rank(), 0, "single");
  EXPECT_EQ(single->world_ranks(), std::vector<int>{rank});
}

TEST_F(Collectives, ArgumentErrorsNameTheCallAndGroup) {
  float x = 0;
  auto message = [](auto fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string m =
      message([&] { world->allreduce(&x, &x, int64_t(1) << 33, CommDType::f32, ReduceOp::sum); });
  EXPECT_NE(m.find("allreduce on communicator 'world'"), std::string::npos) << m;
  EXPECT_NE(m.find("does not fit"), std::string::npos) << m;
  m = message([&] { world->broadcast(&x, 1, CommDType::f32, size); });
  EXPECT_NE(m.find("root"), std::string::npos) << m;
  std::vector<int64_t> short_counts(size + 1, 0);
  m = message([&] { world->allgatherv(&x, 0, &x, short_counts, short_counts, CommDType::f32); });
  EXPECT_NE(m.find("need one per rank"), std::string::npos) << m;
  m = message([&] { world->send(&x, 1, CommDType::f32, -1, 0); });
  EXPECT_NE(m.find("destination -1"), std::string::npos) << m;
}

}  // namespace
}  // namespace origami
