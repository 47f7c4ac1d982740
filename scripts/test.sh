#!/usr/bin/env bash
# The test command: formatting, vet, and every test with the race detector
# against real RabbitMQ nodes (the machine's broker on 5672 and private nodes
# the tests start on free ports). Fails loudly on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed but not on a CI runner's PATH.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"

bash scripts/ensure-deps.sh

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
(cd bench && go vet ./...)
# CI=true makes every broker test fail, never skip, when no broker can be had.
CI=${CI:-true} go test -race -count=1 -timeout 30m ./... "$@"
# The load tool is a module of its own (bench/go.mod): its unit tests.
(cd bench && CI=${CI:-true} go test -race -count=1 ./...)
