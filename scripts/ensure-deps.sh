#!/usr/bin/env bash
# Installs and starts what the tests and the service need on a fresh Debian
# machine: rabbitmq-server (a node on 127.0.0.1:5672 plus private nodes the tests
# start themselves), prometheus/promtool (rule tests and a real scrape test),
# curl (the README's examples are run as written) and chromium (a headless
# browser checks the admin listener's /debug/supervision page).
set -euo pipefail

need=()
command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-deps: installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# rabbitmqctl (run as this user) must share the nodes' Erlang cookie.
cookie=/var/lib/rabbitmq/.erlang.cookie
if [ -f "$cookie" ] && ! cmp -s "$cookie" "$HOME/.erlang.cookie" 2>/dev/null; then
  install -m 400 "$cookie" "$HOME/.erlang.cookie"
fi

# The machine's broker on 5672: start it when nothing listens there.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "ensure-deps: starting rabbitmq-server on 127.0.0.1:5672"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break
    sleep 1
  done
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || { echo "ensure-deps: broker did not start" >&2; exit 1; }
  # a new installation's cookie exists only once the node has run
  [ -f "$cookie" ] && install -m 400 "$cookie" "$HOME/.erlang.cookie"
fi
echo "ensure-deps: ok"
