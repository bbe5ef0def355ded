#!/usr/bin/env bash
# The five-minute walkthrough of README.md, run exactly as written there:
# start the control plane, create a cluster, connect with psql, kill the
# primary and watch `dbpilot events --follow` report the failover and the
# control plane's repair of the killed node, run and list a backup, restore
# to a point in time, switch over, delete.
#
#   make build && deploy/dev/walkthrough.sh
#
# TestWalkthrough (cmd/dbpilot) runs this script in `make test` and checks
# the README's commands are in it, so it
# cannot silently rot. Environment: BIN (the binaries, default ./bin) and
# WORK (a scratch folder, default .dbpilot/walkthrough, wiped first).
set -euo pipefail

BIN=$(cd "${BIN:-bin}" && pwd)
WORK=${WORK:-.dbpilot/walkthrough}
rm -rf "$WORK" && mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
export PATH="$BIN:$PATH"
export XDG_CONFIG_HOME="$WORK/config" # a private dbpilot context
unset DBPILOT_SERVER DBPILOT_TOKEN DBPILOT_NAMESPACE DBPILOT_CONTEXT

step() { printf '\n==> %s\n' "$*"; }
# wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "walkthrough: timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}
# pg_env CLUSTER: point psql at the cluster's primary (step 3 spelled out).
pg_env() {
  local NODES PRIMARY
  NODES="$WORK/server/nodes/$(dbpilot cluster get "$1" -o go-template='{{.id}}')"
  PRIMARY=$(dbpilot cluster get "$1" -o go-template='{{.primary}}')
  export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres
  export PGPORT=$(awk '$1 == "port:" {print $2}' "$NODES/$PRIMARY/agent.yaml")
  export PGPASSWORD=$(awk '$1 == "superuser:" {s = 1} s && $1 == "password:" {print $2; exit}' "$NODES/credentials.yaml")
}

bg=()
cleanup() {
  # Leave nothing behind, even when a step failed.
  dbpilot cluster delete demo --yes --wait >/dev/null 2>&1 || true
  dbpilot cluster delete demo-restored --yes --wait >/dev/null 2>&1 || true
  for pid in "${bg[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

step "1. Start the control plane: embedded etcd, SQLite, PostgreSQL nodes as local processes"
dbpilot-server dev --dir "$WORK/server" --listen 127.0.0.1:0 >"$WORK/server.env" 2>"$WORK/server.log" &
bg+=($!)
until grep -q DBPILOT_TOKEN= "$WORK/server.env"; do sleep 0.5; done
set -a && . "$WORK/server.env" && set +a
dbpilot login --server "$DBPILOT_SERVER" --token "$DBPILOT_TOKEN"

step "2. Create a 3-node cluster and look at it"
dbpilot cluster create demo --replicas 3 --wait
dbpilot cluster get demo

step "3. Connect with psql and write something"
NODES="$WORK/server/nodes/$(dbpilot cluster get demo -o go-template='{{.id}}')"
PRIMARY=$(dbpilot cluster get demo -o go-template='{{.primary}}')
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres
export PGPORT=$(awk '$1 == "port:" {print $2}' "$NODES/$PRIMARY/agent.yaml")
export PGPASSWORD=$(awk '$1 == "superuser:" {s = 1} s && $1 == "password:" {print $2; exit}' "$NODES/credentials.yaml")
psql -c "CREATE TABLE notes (id int PRIMARY KEY, body text)" -c "INSERT INTO notes VALUES (1, 'hello'), (2, 'world')"
psql -c "SELECT * FROM notes"

step "4. Kill the primary and watch the failover"
dbpilot events --follow --cluster demo >"$WORK/events.log" & # in a second terminal: dbpilot events --follow --cluster demo
bg+=($!)
PRIMARY=$(dbpilot cluster get demo -o go-template='{{.primary}}')
POSTMASTER=$(head -1 "$WORK/server/nodes/$(dbpilot cluster get demo -o go-template='{{.id}}')/$PRIMARY/data/postmaster.pid")
kill -KILL -- -"$(awk '{print $5}' /proc/"$POSTMASTER"/stat)" # the node's agent and PostgreSQL
wait_for 90 "events --follow to report the failover" grep -q "is primary (failover, was $PRIMARY" "$WORK/events.log"
# The control plane notices the killed node within its repair interval
# (30 s) and restarts it; later operations would wait for the repair.
wait_for 120 "the control plane to repair $PRIMARY" grep -q "repair succeeded" "$WORK/events.log"
cat "$WORK/events.log"
dbpilot cluster get demo
pg_env demo
psql -c "SELECT * FROM notes"

step "5. Run a backup and list it"
dbpilot backup run demo --wait
dbpilot backup list demo

step "6. Restore to a point in time, before a mistake"
POINT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1
psql -c "DELETE FROM notes"
dbpilot backup restore demo --into demo-restored --time "$POINT" --wait
pg_env demo-restored && psql -c "SELECT * FROM notes" # both rows are back

step "7. Switch over to a replica, with no data loss"
dbpilot cluster switchover demo --wait

step "8. Delete the clusters"
dbpilot cluster delete demo --yes --wait
dbpilot cluster delete demo-restored --yes --wait
dbpilot cluster list

step "Walkthrough complete."
