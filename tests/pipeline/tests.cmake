# Multi-rank runs of the pipeline executor (origami-pipeline-mpi-tests): every schedule over 2 and
# 4 pipeline ranks against the one-process gradients, and over the PP group of PP2 x DP2.
origami_mpi_test(pipeline pipeline_executor 2 "PipelineExecutor.*")
origami_mpi_test(pipeline pipeline_executor 4 "PipelineExecutor.*")
