#!/usr/bin/env bash
# Builds daprd 1.14.4 with the stable components into
# ~/.cache/dbpilot/daprd-1.14.4 unless it is there already (~5 min).
set -euo pipefail
OUT="${DAPRD:-$HOME/.cache/dbpilot/daprd-1.14.4}"
if [ -x "$OUT" ]; then echo "build-daprd: $OUT present" >&2; exit 0; fi
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
go mod download github.com/dapr/dapr@v1.14.4
dir=$(go list -m -f '{{.Dir}}' github.com/dapr/dapr@v1.14.4 2>/dev/null || echo "$(go env GOMODCACHE)/github.com/dapr/dapr@v1.14.4")
cd "$dir"
go build -tags stablecomponents -o "$OUT" ./cmd/daprd
echo "build-daprd: built $OUT" >&2
