# Multi-rank training tests and command-line error tests of origami-train.
origami_mpi_test(train data_parallel 2 "DataParallel.*")
origami_mpi_test(train data_parallel 4 "DataParallel.*")

# Each broken input must fail on every rank with a message naming the file/key (expect_error.sh
# checks the exit status and the message).
set(bad ${CMAKE_CURRENT_SOURCE_DIR}/train/configs)
set(expect ${CMAKE_CURRENT_SOURCE_DIR}/train/expect_error.sh)
set(runner ${ORIGAMI_MPIRUN} -np 2 $<TARGET_FILE:origami-train>)
foreach(case
    "unknown_key|bad_unknown_key.yaml:6|moe.num_expert"
    "wrong_type|bad_wrong_type.yaml:4|model.hidden_size"
    "not_dividing|bad_parallel.yaml|parallel.pipeline"
    "pipeline_split|bad_pipeline_split.yaml:3|parallel.pipeline_first_stage_layers")
  string(REPLACE "|" ";" parts "${case}")
  list(GET parts 0 name)
  list(GET parts 1 where)
  list(GET parts 2 key)
  string(REGEX REPLACE ":.*" "" file "${where}")
  add_test(NAME cli.config_error.${name}
    COMMAND ${expect} "${where}" "${key}" ${runner} ${bad}/${file})
  set_tests_properties(cli.config_error.${name} PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
    LABELS cli TIMEOUT 120)
endforeach()
add_test(NAME cli.override_error
  COMMAND ${expect} "--set model.hidden_size=abc" "model.hidden_size" ${runner}
          --set model.hidden_size=abc)
set_tests_properties(cli.override_error PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}" LABELS cli)

# Expert parallelism with folding (the issue's layout matrix) and capacity mode.
origami_mpi_test(train expert_parallel 2 "ExpertParallel.*:Capacity.*")
origami_mpi_test(train expert_parallel 4 "ExpertParallel.*:Capacity.*")
origami_mpi_test(train expert_parallel 8 "ExpertParallel.*")
origami_mpi_test(train expert_report 2 "ExpertReport.*")
# logging.profile: per-op and per-group times, training unchanged (tests/train/mpi_test_step_profile.cpp).
origami_mpi_test(train step_profile 4 "StepProfile.*")
# Checkpoints: bitwise resume, loading into other layouts, refusal of bad checkpoints.
origami_mpi_test(train checkpoint 2 "Checkpoint*")
origami_mpi_test(train checkpoint 4 "Checkpoint*")
origami_mpi_test(train checkpoint 8 "Checkpoint.LoadsIntoOtherLayouts:Checkpoint.OneRank*")

# The CUDA backend end to end (skips without a GPU): 1 rank, and ranks sharing one GPU.
origami_mpi_test(train cuda_training 1 "CudaTraining.*")
origami_mpi_test(train cuda_training 2 "CudaTraining.RanksSharingOneGpuMatchOneRank:CudaTraining.TensorAndContext*")
origami_mpi_test(train cuda_training 4 "CudaTraining.TensorAndContext*")

# Gating schedules and router options in real training runs (tests/train/mpi_test_router_schedule.cpp).
origami_mpi_test(train router_schedule 2 "RouterSchedule.*")

# The host-staged path for device memory, exercised on CPU (a backend that calls its memory device).
origami_mpi_test(train device_staging 3 "DeviceStaging.*")

# Tensor (with sequence), context and data parallelism folded with EP, with and without
# activation recomputation (tests/train/mpi_test_tensor_context_parallel.cpp).
origami_mpi_test(train tensor_context_parallel 2 "TensorContextParallel.*")
origami_mpi_test(train tensor_context_parallel 4 "TensorContextParallel.*")
origami_mpi_test(train tensor_context_parallel 8 "TensorContextParallel.LayoutsMatch*:TensorContextParallel.FullRecompute*")
# The start-up memory report against the allocator's peak (tests/train/mpi_test_memory_estimate.cpp).
origami_mpi_test(train memory_estimate 1 "MemoryEstimate.*")
origami_mpi_test(train memory_estimate 2 "MemoryEstimate.*")
origami_mpi_test(train memory_estimate 4 "MemoryEstimate.*")

# The pipeline executor over real ranks: every schedule against the one-process gradients, and
# over the PP group of PP2 x DP2.
origami_mpi_test(train pipeline_executor 2 "PipelineExecutor.*")
origami_mpi_test(train pipeline_executor 4 "PipelineExecutor.*")

# Pipeline parallelism against the 1-rank run (PP2, PP4, interleaved, folded with TP/CP/DP/EP,
# tied embeddings, global balance, dense-to-sparse, an uneven split, ZeRO-1).
origami_mpi_test(train pipeline_parallel 2 "PipelineParallel.*")
origami_mpi_test(train pipeline_parallel 4 "PipelineParallel.*")
origami_mpi_test(train pipeline_parallel 8 "PipelineParallel.*")

# SMoE-Dropout's frozen random router: unchanged by training (AdamW and ZeRO-1), EP = 1 rank.
origami_mpi_test(train frozen_router 2 "FrozenRouter.*")

# The MoE variants (MoE++, AdaMoE, RMoE, residual and pyramid MoE): EP, ETP, TP+SP, CP, PP
# (1F1B, interleaved, with EP and TP) against 1 rank; their resume runs with the checkpoint tests.
origami_mpi_test(train moe_variants 2 "MoeVariants.*")
origami_mpi_test(train moe_variants 4 "MoeVariants.*")

# FSSDP (tests/train/mpi_test_fssdp.cpp): the EP placement is EP + ZeRO-1 bit for bit (4 ranks);
# skewed copies equal the 1-rank run (4 ranks; 8 ranks with ranks that own no expert);
# re-sharding and checkpoints across FSSDP on / off and EP sizes (4 ranks).
origami_mpi_test(train fssdp 4 "Fssdp.*")
origami_mpi_test(train fssdp 8 "Fssdp.SkewedCopiesMatchTheOneRankRun")

# training.precision bf16 on the cpu reference (tests/train/mpi_test_bf16_training.cpp): masters
# and compute copy, every layout (DP, EP, ETP, TP+SP, CP, PP, FSSDP, ZeRO-1) against the 1-rank
# bf16 run, and the default job's 50-step loss curve against fp32 (2 ranks); bitwise resume in
# bf16 is in the checkpoint tests (Checkpoint/Resume.*Bf16).
origami_mpi_test(train bf16_training 2 "Bf16Training.*")
origami_mpi_test(train bf16_training 4 "Bf16Training.Computes*:Bf16Training.EveryLayout*:Bf16Training.FlipFree*")
