// MPI's lifetime for the apps, and the node-local rank computed once while every rank is present
// (it needs a collective, so it must not be computed lazily by whichever rank asks first).
#include "comm/mpi_runtime.h"

#include <mpi.h>

#include <cstdlib>
#include <string>

namespace origami {

namespace {
int g_node_local_rank = -1, g_node_local_size = 1;

void compute_node_local_rank() {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &g_node_local_rank);
  MPI_Comm_size(node, &g_node_local_size);
  MPI_Comm_free(&node);
}
}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(argc, argv);
  compute_node_local_rank();
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int node_local_rank() {
  if (g_node_local_rank >= 0) return g_node_local_rank;
  // MPI initialised elsewhere (tests): mpirun tells each process its local rank.
  if (const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) return std::stoi(env);
  return 0;
}

int node_local_size() {
  if (g_node_local_rank >= 0) return g_node_local_size;
  if (const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) return std::stoi(env);
  return 1;
}

void abort_all_ranks(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace origami
