#!/usr/bin/env bash
# Installs what `make test-dapr` needs, only when missing: redis-server from
# Debian's packages (the reference Dapr pub/sub broker; the tests start their
# own instances, so the packaged service is stopped) and daprd 1.14.4 built
# from the github.com/dapr/dapr module (deploy/dev/build-daprd.sh, ~5-7 min
# the first time). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "install-dapr-deps: installing redis-server from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq redis-server >/dev/null
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
./build-daprd.sh
echo "install-dapr-deps: ok ($(redis-server --version | cut -d' ' -f3), ${DAPRD:-$HOME/.cache/dbpilot/daprd-1.14.4})" >&2
