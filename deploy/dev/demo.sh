#!/usr/bin/env bash
# make demo: the main job on the embedded default. Starts `dbpilot-server dev`
# (embedded etcd, SQLite, the process provider), creates a 3-node PostgreSQL
# cluster with the CLI, shows its topology, then follows the cluster's events
# until Ctrl-C, when it deletes the cluster and stops the server.
#
# Environment: BIN (binaries, default ./bin), WORK (default .dbpilot/demo,
# wiped first), NODES (default 3), SYNC (on|off, default on).
set -euo pipefail

BIN=$(cd "${BIN:-bin}" && pwd)
WORK=${WORK:-.dbpilot/demo}
rm -rf "$WORK" && mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
export PATH="$BIN:$PATH" XDG_CONFIG_HOME="$WORK/config"
unset DBPILOT_SERVER DBPILOT_TOKEN DBPILOT_NAMESPACE DBPILOT_CONTEXT

server="" events=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$events" ] && kill "$events" 2>/dev/null || true
  echo
  echo "==> deleting the cluster and stopping the server"
  dbpilot cluster delete demo --yes --wait --timeout 2m || true
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
}
trap cleanup INT TERM EXIT

echo "==> starting dbpilot-server dev (log: $WORK/server.log)"
# In its own session: Ctrl-C goes to this script's trap, which deletes the
# cluster through the server before stopping it.
setsid dbpilot-server dev --dir "$WORK/server" --listen 127.0.0.1:0 >"$WORK/server.env" 2>"$WORK/server.log" &
server=$!
for _ in $(seq 1 120); do grep -q DBPILOT_TOKEN= "$WORK/server.env" 2>/dev/null && break; sleep 0.5; done
set -a && . "$WORK/server.env" && set +a
dbpilot login --server "$DBPILOT_SERVER" --token "$DBPILOT_TOKEN"
echo "    API $DBPILOT_SERVER  (token in $WORK/server.env)"

echo "==> dbpilot cluster create demo --replicas ${NODES:-3} --sync ${SYNC:-on} --wait"
dbpilot cluster create demo --replicas "${NODES:-3}" --sync "${SYNC:-on}" --wait

cat <<TXT

==> the cluster is up. In another terminal (same folder):
    export PATH="$BIN:\$PATH" XDG_CONFIG_HOME="$WORK/config"
    dbpilot cluster get demo                  # topology: roles, term, LSN, lag
    dbpilot cluster switchover demo --wait    # planned switchover
    # host loss of the primary (agent + PostgreSQL, one process group):
    PM=\$(head -1 "$WORK/server/nodes/\$(dbpilot cluster get demo -o go-template='{{.id}}')/\$(dbpilot cluster get demo -o go-template='{{.primary}}')/data/postmaster.pid")
    kill -KILL -- -\$(awk '{print \$5}' /proc/\$PM/stat)
    # a replica takes over within seconds; within 30 s (--repair-interval) the
    # control plane restarts the killed node (node_repair events) and it rejoins
==> following the cluster's events (Ctrl-C stops the demo and cleans up)
TXT
# In the background so Ctrl-C (or a SIGTERM to this script alone) reaches the trap at once.
dbpilot events --follow --cluster demo &
events=$!
wait "$events"
