#!/usr/bin/env bash
# Runs the service against the machine's RabbitMQ on 127.0.0.1:5672 (installing
# and starting it when missing), with the example topology (examples/), so that
# the README's examples work as written. Extra PUBLISHER_* variables pass
# through. The binary is built, then exec'ed: a signal sent to this script (or
# to make, which passes SIGTERM on to it) reaches the service itself.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
bash scripts/ensure-deps.sh
go build -o bin/publisher ./cmd/publisher
export PUBLISHER_AMQP_URLS=${PUBLISHER_AMQP_URLS:-amqp://guest:guest@127.0.0.1:5672/}
export PUBLISHER_TOPOLOGY_FILE=${PUBLISHER_TOPOLOGY_FILE:-examples/topology.yaml}
exec bin/publisher "$@"
