#!/usr/bin/env bash
# tools/cluster itself: up is idempotent, nodes have their own hostname and 198.18.0.0/15
# address, mpirun places ranks by node-local rank over the agent, shape/cut/heal take effect,
# bad input is refused with a message, and down removes everything it made (namespaces, the
# state dir, Open MPI's leftovers of a killed job) even when the state dir was lost.
# usage: cluster_tool.sh SOURCE_DIR BUILD_DIR
src=$1 build=$2 test_name=tool
source "$(dirname "$0")/lib.sh"
skip_unless_cluster
c=("${cluster[@]}")
up 2
"${c[@]}" up 2 | grep -q "already up" || fail "a second 'up 2' rebuilt a healthy cluster"
[ "$("${c[@]}" exec 1 hostname)" = "$cluster_name-n1" ] || fail "node 1 has hostname $("${c[@]}" exec 1 hostname)"
"${c[@]}" exec 1 ip -o -4 addr show dev eth0 | grep -q "inet 198\.18\.0\.11/24" || fail "node 1's address is not 198.18.0.11/24"
[ -z "$(ip -o link | grep -E "$cluster_name|p[0-9]+@" || true)" ] || fail "interfaces leaked into the root namespace"
out=$("${c[@]}" run timeout 60 mpirun --hostfile "$hostfile" -np 4 --bind-to none \
  sh -c 'echo "$(hostname) $OMPI_COMM_WORLD_RANK $OMPI_COMM_WORLD_LOCAL_RANK"' | sort -k2 -n)
echo "$out"
[ "$(echo "$out" | awk '{print $1, $3}' | tr '\n' ' ')" = \
  "$cluster_name-n0 0 $cluster_name-n0 1 $cluster_name-n1 0 $cluster_name-n1 1 " ] ||
  fail "ranks are not 2 per node in slot order with node-local ranks 0, 1"
# reach: a TCP connection from node 0 to node 1 within 2 s (bounded on both sides).
reach() {
  "${c[@]}" exec 1 timeout 5 python3 -c 'import socket; s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("198.18.0.11", 5999)); s.listen(1)
s.settimeout(4); s.accept()' > /dev/null 2>&1 &
  local server=$! rc=0
  sleep 0.5
  "${c[@]}" exec 0 timeout 3 python3 -c 'import socket
socket.create_connection(("198.18.0.11", 5999), timeout=2)' > /dev/null 2>&1 || rc=1
  kill $server 2>/dev/null; wait $server 2>/dev/null
  return $rc
}
reach || fail "node 0 cannot reach node 1"
# cut: node 0 cannot reach node 1; heal restores it.
"${c[@]}" cut 1 > /dev/null
! reach || fail "node 1 still reachable after cut"
"${c[@]}" status | grep -q "CUT" || fail "status does not show the cut"
"${c[@]}" heal 1 > /dev/null
reach || fail "node 1 unreachable after heal"
"${c[@]}" shape 1 50mbit > /dev/null
"${c[@]}" status | grep "$cluster_name-n1" | grep -q "shaped 50Mbit" || fail "shape not shown: $("${c[@]}" status)"
"${c[@]}" shape 1 off > /dev/null
# Bad input: each refused with a message naming the problem.
for bad in "up 0" "up x" "shape 9 1gbit" "cut x" "kill 7" "frob"; do
  msg=$("${c[@]}" $bad 2>&1) && fail "'$bad' was accepted"
  [ -n "$msg" ] || fail "'$bad' failed without a message"
done
# A job killed hard leaves Open MPI files named after the nodes; down removes them, also after
# the state dir is gone (a crashed harness).
"${c[@]}" run sh -c "mpirun --hostfile $hostfile -np 4 --bind-to none sleep 60 > /dev/null 2>&1 &" 
sleep 3
"${c[@]}" kill 0 > /dev/null; "${c[@]}" kill 1 > /dev/null
ls -d /tmp/ompi."$cluster_name"-n* > /dev/null 2>&1 || fail "expected Open MPI session dirs of the killed job"
rm -rf "/tmp/origami-cluster-$cluster_name"
"${c[@]}" down > /dev/null
left=$(ip netns list | awk '{print $1}' | grep "^$cluster_name-" || true)
[ -z "$left" ] || fail "namespaces left: $left"
ls -d /tmp/ompi."$cluster_name"-n* /dev/shm/vader_segment."$cluster_name"-n* 2>/dev/null && fail "Open MPI leftovers remain"
"${c[@]}" down > /dev/null || fail "a second down failed"
echo "cluster tool: idempotent up/down, hostnames, addresses, placement, cut/heal, shape, refusals, cleanup: ok"
