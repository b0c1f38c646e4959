# Multi-host tests on a local cluster of network namespaces (tools/cluster/cluster; needs root;
# each test exits 77, reported as skipped, where namespaces are not permitted). Every run goes
# through launch/train.sh --hostfile, as a user types it. docs/multinode.md describes them.
set(mn_dir ${CMAKE_CURRENT_SOURCE_DIR}/multinode)
function(origami_multinode_test name script)
  add_test(NAME multinode.${name}
    COMMAND ${mn_dir}/${script} ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR} ${ARGN})
  # Both cores, one cluster test at a time: the fault tests' time bounds are about the job, not
  # about a neighbour's load.
  set_tests_properties(multinode.${name} PROPERTIES LABELS multinode TIMEOUT 240 PROCESSORS 2
    SKIP_RETURN_CODE 77 RESOURCE_LOCK origami_cluster)
endfunction()

# 2 nodes x 2 ranks (TP2 in a node, EP4 across) and 3 x 2 (TP2 and ETP2 in a node, EP3 across;
# 6 experts so EP can span 3 nodes) against the 1-rank losses.
origami_multinode_test(eq2x2 equivalence.sh eq2x2 2
  "parallel.tensor=2 parallel.sequence_parallel=true parallel.expert=4")
origami_multinode_test(eq3x2 equivalence.sh eq3x2 3
  "parallel.tensor=2 parallel.sequence_parallel=true parallel.expert_tensor=2 parallel.expert=3"
  "moe.num_experts=6 training.global_batch_size=12")
set_tests_properties(multinode.eq2x2 PROPERTIES FIXTURES_SETUP multinode_2node_run)
# The 2-node run's checkpoint on 3 nodes with PP3; a killed node and --max-restarts 1.
origami_multinode_test(resume_other_layout resume_other_layout.sh)
origami_multinode_test(restart restart.sh)
set_tests_properties(multinode.resume_other_layout multinode.restart PROPERTIES
  FIXTURES_REQUIRED multinode_2node_run)
# Faults on node 1 of 3: each ends the job within 60 s, says who and what, the checkpoint loads.
foreach(kind rank node cut stop)
  origami_multinode_test(fault_${kind} fault.sh ${kind})
endforeach()

# The cluster tool itself, and the scaling tools' smallest series on it.
origami_multinode_test(cluster_tool cluster_tool.sh)
origami_multinode_test(scaling scaling_smoke.sh)

# The watchdog on one host, without namespaces (runs wherever mpirun does).
add_test(NAME multinode.watchdog_one_host
  COMMAND ${mn_dir}/watchdog_one_host.sh ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
set_tests_properties(multinode.watchdog_one_host PROPERTIES LABELS multinode TIMEOUT 120
  PROCESSORS 2)

# The placement report's rules (NodeMap::by_slot) and the collective watchdog, without a cluster.
add_executable(origami-multinode-tests ${mn_dir}/test_placement_report.cpp
  ${mn_dir}/test_collective_watchdog.cpp)
target_link_libraries(origami-multinode-tests PRIVATE origami_train GTest::gtest_main)
gtest_discover_tests(origami-multinode-tests DISCOVERY_TIMEOUT 60 PROPERTIES LABELS unit)
