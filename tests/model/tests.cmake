# Multi-rank runs of the model tests (origami-model-mpi-tests): the global-batch balance loss with
# every rank routing a different distribution, at 2 and 4 ranks.
origami_mpi_test(model global_balance 2 "GlobalBalance.*")
origami_mpi_test(model global_balance 4 "GlobalBalance.*")
# The token dispatcher's round trip, adjoints and plan counts under the layout table of
# mpi_test_token_dispatcher.cpp (2 ranks: EP2, ETP2; 4 ranks: EP2xEDP2, ETP2xEDP2, EP4, EP2xETP2;
# both: each rank alone, and capacity padding).
origami_mpi_test(model token_dispatcher 2 "TokenDispatcher.*")
origami_mpi_test(model token_dispatcher 4 "TokenDispatcher.*")
