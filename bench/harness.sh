#!/usr/bin/env bash
# Cross-check with the shared load harness (../shared/bench/loadgen.py): start the whole system as
# `make run` does, but with production settings (DEBUG=0, keys set, throttles and per-user limits
# raised for the load), on a fresh database with the harness's users, then run loadgen against it.
#
#   bench/harness.sh [loadgen args...]      (defaults: the performance issue's command)
# Environment: HARNESS_VENV (a venv with ../shared/bench/requirements.txt), DATABASE_URL / REDIS_URL
# to measure PostgreSQL + Redis, CORE_WORKERS (core processes), OUT (JSON result path).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/bench}
HARNESS_VENV=${HARNESS_VENV:-/tmp/bench-venv}
OUT=${OUT:-var/harness.json}
PORT=${PORT:-8000}
work=$(mktemp -d /tmp/cortex-harness.XXXXXX)
export DEBUG=0 LOG_LEVEL=WARNING ALLOWED_HOSTS=127.0.0.1,localhost \
  SECRET_KEY=harness-secret-key-0123456789abcdefghijklmnop \
  JWT_SIGNING_KEY=harness-jwt-key-0123456789abcdefghijklmnopqr \
  CORTEX_SERVICE_TOKEN=harness-service-token-0123456789abcdef \
  INPUT_RATE=100000000/min TICKET_RATE=100000000/min LOGIN_RATE=100000000/min CONTEXT_RATE=100000000/min \
  LOGIN_FAILURE_RATE=100000000/min STREAMS_PER_USER=100000 SQLITE_PATH=${SQLITE_PATH:-$work/db.sqlite3}
.venv/bin/python manage.py migrate --noinput >/dev/null
.venv/bin/python manage.py shell -c "
from accounts.models import User
for n in range(1, 11):
    User.objects.filter(email=f'bench{n:02d}@acc.test').exists() or User.objects.create_user(email=f'bench{n:02d}@acc.test', password='pw-bench-4c9a')
"
for i in $(seq -w 1 10); do echo "bench$i@acc.test:pw-bench-4c9a"; done > "$work/users.txt"
ulimit -n 20000 2>/dev/null || ulimit -n 4096
.venv/bin/python manage.py run_cortex --port "$PORT" >"$work/run_cortex.log" 2>&1 &
group=$!
trap 'kill -TERM $group 2>/dev/null; wait $group 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2
done
sleep 1
pids=$(pgrep -d, -P "$group" || true)
echo "run_cortex $group, children $pids (log $work/run_cortex.log)"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--phase input_rps,fanout,sse_capacity -C 32 -T 15 -S 100 -P 3000 --post-rate 100 -K 5000)
"$HARNESS_VENV/bin/python" "$SHARED/loadgen.py" --base-url "http://127.0.0.1:$PORT" --user-file "$work/users.txt" \
  --users 10 --max-seconds 300 --server-pids "$pids" --label cortex --out "$OUT" "${args[@]}"
