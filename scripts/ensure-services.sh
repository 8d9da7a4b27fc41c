#!/usr/bin/env bash
# Starts PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and Redis (127.0.0.1:6379)
# when they are not running: the PostgreSQL store back end and the shared Redis state are
# tested against them (issue 16). The project's machines start both before a session; a fresh
# machine may not have, so CI calls this first. Installs the Debian packages when missing.
# `make sim` and `make serve` never need either (SQLite is the embedded default).
set -euo pipefail
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if [ "$(id -u)" != 0 ]; then
  pg_up && redis_up && exit 0
  echo "ensure-services: PostgreSQL or Redis is down and this is not root; their tests will fail" >&2
  exit 0
fi
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "ensure-services: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! pg_up; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
fi
if ! redis_up; then
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis_up && break; sleep 0.2; done
fi
pg_up || { echo "ensure-services: PostgreSQL did not start" >&2; exit 1; }
redis_up || { echo "ensure-services: Redis did not start" >&2; exit 1; }
# The tests use database `test` with trust auth for the current OS user (root) on 127.0.0.1.
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
