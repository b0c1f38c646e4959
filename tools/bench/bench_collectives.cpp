// origami-bench-collectives: the float sums the trainer makes (gradient reduce-scatter and
// all-reduce, TP/CP reduce-scatters), through MpiCommunicator and through Open MPI's own
// MPI_Reduce_scatter_block / MPI_Allreduce on the same buffers, plus the all-gather for scale.
// Prints the median and best ms of --reps calls per size (rank 0; every rank waits at a barrier
// before each call, so a call's time is its own, not the skew of the ranks before it).
//   mpirun -np 8 origami-bench-collectives --mib 1 8 48
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"

using namespace origami;

namespace {

// {median, best} ms of `reps` calls, after one untimed call (connections, first touch).
std::pair<double, double> time_ms(const Communicator& world, int reps,
                                  const std::function<void()>& f) {
  f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    world.barrier();
    const double t0 = MPI_Wtime();
    f();
    ms.push_back(1e3 * (MPI_Wtime() - t0));
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  CLI::App app{"origami-bench-collectives: float sums, MpiCommunicator's and MPI's own"};
  std::vector<double> mib{1, 8, 48};
  int reps = 5;
  app.add_option("--mib", mib, "buffer sizes (MiB of floats, the whole buffer of each rank)");
  app.add_option("--reps", reps, "timed calls per size")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const auto world = make_mpi_world();
  const int g = world->size();
  const MPI_Comm comm = static_cast<const MpiCommunicator&>(*world).raw();
  if (world->rank() == 0)
    fmt::print("{} ranks; ms per call, median (best) of {}\n", g, reps);
  if (world->rank() == 0)
    fmt::print("{:>8} {:>22} {:>22} {:>22} {:>22} {:>22}\n", "MiB", "reduce_scatter",
               "MPI_Reduce_scatter", "allreduce", "MPI_Allreduce", "allgather");
  for (double m : mib) {
    const int64_t n = std::max<int64_t>(g, int64_t(m * 262144.0) / g * g);  // whole blocks
    std::vector<float> send(static_cast<size_t>(n), 1.f), recv(static_cast<size_t>(n));
    std::vector<float> block(static_cast<size_t>(n / g));
    const int k = int(n / g);
    const auto rs = time_ms(*world, reps, [&] {
      world->reduce_scatter(send.data(), block.data(), k, CommDType::f32, ReduceOp::sum);
    });
    const auto mpi_rs = time_ms(*world, reps, [&] {
      MPI_Reduce_scatter_block(send.data(), block.data(), k, MPI_FLOAT, MPI_SUM, comm);
    });
    const auto ar = time_ms(*world, reps, [&] {
      world->allreduce(send.data(), recv.data(), n, CommDType::f32, ReduceOp::sum);
    });
    const auto mpi_ar = time_ms(*world, reps, [&] {
      MPI_Allreduce(send.data(), recv.data(), int(n), MPI_FLOAT, MPI_SUM, comm);
    });
    const auto ag = time_ms(*world, reps, [&] {
      world->allgather(block.data(), recv.data(), k, CommDType::f32);
    });
    if (world->rank() == 0) {
      const auto cell = [](std::pair<double, double> t) {
        return fmt::format("{:.1f} ({:.1f})", t.first, t.second);
      };
      fmt::print("{:>8.1f} {:>22} {:>22} {:>22} {:>22} {:>22}\n", double(n) / 262144.0, cell(rs),
                 cell(mpi_rs), cell(ar), cell(mpi_ar), cell(ag));
    }
  }
  return 0;
}
