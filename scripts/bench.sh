#!/usr/bin/env bash
# Performance comparison in one run: starts a private RabbitMQ node (with
# rabbitmq_management) on free loopback ports, runs pubbench (bench/, a Go
# module of its own) against it
# (the service over HTTP, raw amqp091-go, raw pipelined, the management API
# publish endpoint, the service with a durable spool answering
# "Prefer: respond-async", whose spool directory pubbench creates under
# -spool-parent and removes, and the service's /v1/batch and /v1/stream) and
# always stops the node and removes its directory.
#
#   bash scripts/bench.sh                  # defaults: -c 64 -size 256 -duration 10s
#   bash scripts/bench.sh -duration 5s -c 128
#   bash scripts/bench.sh -json > results.json
#
# Arguments pass through to pubbench (cd bench && go run . -help).
# Needs root (the node runs as user rabbitmq) and rabbitmq-server installed
# (scripts/ensure-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rabbitmq-server >/dev/null 2>&1 || {
  echo "bench: rabbitmq-server is not installed (bash scripts/ensure-deps.sh installs it)" >&2; exit 1; }

# rabbitmqctl (run as this user) must share the node's Erlang cookie.
cookie=/var/lib/rabbitmq/.erlang.cookie
if [ -f "$cookie" ] && ! cmp -s "$cookie" "$HOME/.erlang.cookie" 2>/dev/null; then
  install -m 400 "$cookie" "$HOME/.erlang.cookie"
fi

# free_port prints a loopback TCP port nobody listens on (never 5672/25672,
# the machine's own broker), avoiding the ones already chosen in $taken.
taken=" 5672 25672 4369 15672 "
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 30000 ))
    case "$taken" in *" $p "*) continue ;; esac
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
      taken="$taken$p "
      echo "$p"
      return 0
    fi
  done
  echo "bench: no free port found" >&2
  return 1
}

amqp_port=$(free_port)
dist_port=$(free_port)
mgmt_port=$(free_port)
node="pubbench$$_$RANDOM@localhost"
d=$(mktemp -d /tmp/pubbench-rabbit.XXXXXX)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -f "$d/pid" ] || rabbitmqctl -n "$node" -q status >/dev/null 2>&1; then
    echo "bench: stopping $node" >&2
    timeout 60 rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
    # still there (stop timed out, or the node never answered): kill it by its pid
    if [ -s "$d/pid" ]; then
      pid=$(cat "$d/pid")
      if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; sleep 2; kill -9 "$pid" 2>/dev/null || true; fi
    fi
  fi
  rm -rf "$d"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pubbench is a module of its own (bench/go.mod); build it before the node
# starts, so a build error costs no broker start.
go -C bench build -o "$d/pubbench" .

echo '[rabbitmq_management].' > "$d/enabled_plugins"
cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$amqp_port
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt_port
loopback_users.guest = true
EOF
mkdir -p "$d/mnesia" "$d/log"
chown -R rabbitmq:rabbitmq "$d"

# The broker shares the machine's cores with the load generator and the
# service: stop its schedulers from busy-waiting, the usual setting for a
# RabbitMQ node on a shared host (BENCH_ERL_ARGS="" keeps Erlang's default).
erl_args=${BENCH_ERL_ARGS-+sbwt none +sbwtdcpu none +sbwtdio none}

echo "bench: starting $node (amqp 127.0.0.1:$amqp_port, management 127.0.0.1:$mgmt_port) in $d" >&2
env RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT="$dist_port" \
  RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_MNESIA_BASE="$d/mnesia" \
  RABBITMQ_LOG_BASE="$d/log" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
  RABBITMQ_PID_FILE="$d/pid" \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$erl_args" \
  rabbitmq-server -detached

# wait for AMQP, then for the management API to answer
ok=""
for _ in $(seq 1 120); do
  if (exec 3<>/dev/tcp/127.0.0.1/$amqp_port) 2>/dev/null; then ok=1; break; fi
  sleep 0.5
done
[ -n "$ok" ] || { echo "bench: AMQP on $amqp_port did not come up; log:" >&2; tail -n 40 "$d"/log/*.log >&2 || true; exit 1; }
ok=""
for _ in $(seq 1 120); do
  if curl -fsS -o /dev/null -u guest:guest "http://127.0.0.1:$mgmt_port/api/overview" 2>/dev/null; then ok=1; break; fi
  sleep 0.5
done
[ -n "$ok" ] || { echo "bench: management API on $mgmt_port did not come up; log:" >&2; tail -n 40 "$d"/log/*.log >&2 || true; exit 1; }
echo "bench: $node is up" >&2

# From the repository root, as before the move: relative paths in the
# arguments (-service-bin, -spool-parent) mean what they say; the service is
# built here, with its own go.mod.
"$d/pubbench" -service-dir . \
  -amqp-url "amqp://guest:guest@127.0.0.1:$amqp_port/" \
  -mgmt-url "http://guest:guest@127.0.0.1:$mgmt_port" \
  -rabbitmqctl-node "$node" \
  -broker-pid-file "$d/pid" \
  "$@"
