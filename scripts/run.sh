#!/usr/bin/env bash
# Runs the service against the machine's RabbitMQ on 127.0.0.1:5672 (installing
# and starting it when missing). Extra PUBLISHER_* variables pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
bash scripts/ensure-deps.sh
export PUBLISHER_AMQP_URLS=${PUBLISHER_AMQP_URLS:-amqp://guest:guest@127.0.0.1:5672/}
exec go run ./cmd/publisher "$@"
