#!/usr/bin/env bash
# Installs what dbpilot's demo, tests and benchmarks need on a Debian machine,
# only when it is missing: PostgreSQL server binaries (with pg_rewind,
# pg_basebackup, pg_controldata) and the `postgres` OS user they run as.
# With --test it also builds MinIO (a real S3 server for the backup tests)
# and installs Prometheus (prometheus, promtool).
# Go itself must be >= 1.21 (older toolchains cannot fetch go.mod's toolchain).
# Idempotent; safe to run on every `make test`.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_pg() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; }

if ! have_pg; then
  echo "install-deps: installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  # The package starts a default cluster on 5432; dbpilot runs its own.
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
if ! id postgres >/dev/null 2>&1; then
  $SUDO useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: Go is required (>= 1.21; go.mod selects the exact toolchain): https://go.dev/doc/install" >&2
  exit 1
fi
# A real S3-compatible server for the backup tests (agent/backup): MinIO built
# from its Go module, cached outside the repository.
MINIO_BIN="${DBPILOT_MINIO:-$HOME/.cache/dbpilot/minio}"
if [ "${1:-}" = "--test" ] && [ ! -x "$MINIO_BIN" ]; then
  echo "install-deps: building MinIO into $MINIO_BIN (once; takes a few minutes)" >&2
  mkdir -p "$(dirname "$MINIO_BIN")"
  tmp="$(mktemp -d)"
  (cd "$tmp" && GOBIN="$tmp" GOFLAGS=-buildvcs=false go install github.com/minio/minio@latest)
  mv "$tmp/minio" "$MINIO_BIN"
  rm -rf "$tmp"
fi
# Prometheus and promtool (deploy/prometheus's tests, and the control plane's
# test that a real Prometheus scrapes the agents it discovers).
if [ "${1:-}" = "--test" ] && { ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; }; then
  echo "install-deps: installing Prometheus from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a Prometheus on :9090; the tests run their own.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
if ! ls /usr/lib/postgresql/*/bin/pg_amcheck >/dev/null 2>&1 || ! command -v pgbench >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq postgresql-contrib >/dev/null
fi
echo "install-deps: ok ($(ls -d /usr/lib/postgresql/*/bin | tail -1), $(go version | cut -d' ' -f3), minio $MINIO_BIN)" >&2
