# Multi-rank runs of the model tests (origami-model-mpi-tests): the global-batch balance loss with
# every rank routing a different distribution, at 2 and 4 ranks.
origami_mpi_test(model global_balance 2 "GlobalBalance.*")
origami_mpi_test(model global_balance 4 "GlobalBalance.*")
