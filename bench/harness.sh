#!/usr/bin/env bash
# Cross-check with the shared load harness (../shared/bench/loadgen.py): start the whole system as
# `make run` does, but with production settings (DEBUG=0, keys set, throttles and per-user limits
# raised for the load), on a fresh database with the harness's users, then run loadgen against it.
#
#   bench/harness.sh [loadgen args...]      (defaults: the performance issue's command)
#
# With FLOOR=1 (the default) the raw ASGI floor (../shared/bench/floor) is measured right after, with
# the same loadgen arguments, in the same sitting (the issue's targets are ratios to it): its JSON
# goes to ${OUT%.json}-floor.json and a ratio table is printed. FLOOR=0 measures Cortex alone.
# Environment: HARNESS_VENV (a venv with ../shared/bench/requirements.txt, created if missing),
# DATABASE_URL / REDIS_URL to measure PostgreSQL + Redis, OUT (JSON result path).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/bench}
[ -d "$SHARED" ] || SHARED=/work/shared/bench  # a worktree under /work/wt
HARNESS_VENV=${HARNESS_VENV:-/tmp/bench-venv}
OUT=${OUT:-var/harness.json}
PORT=${PORT:-8000}
FLOOR=${FLOOR:-1}
work=$(mktemp -d /tmp/cortex-harness.XXXXXX)
mkdir -p "$(dirname "$OUT")"
if [ ! -x "$HARNESS_VENV/bin/python" ]; then
  python3 -m venv "$HARNESS_VENV" && "$HARNESS_VENV/bin/pip" install --quiet -r "$SHARED/requirements.txt"
fi
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
# The services' ports follow PORT (8000: 9000, 9100, 9200 as `make run`), so two sittings on one
# machine do not take each other's ports (a child restarted on a taken port breaks loadgen's PIDs).
.venv/bin/python manage.py run_cortex --port "$PORT" --memory-port "${MEMORY_PORT:-$((PORT + 1000))}" \
  --cognition-port "${COGNITION_PORT:-$((PORT + 1100))}" --notes-port "${NOTES_PORT:-$((PORT + 1200))}" \
  >"$work/run_cortex.log" 2>&1 &
group=$!
# `|| true` each: under `set -e` a failing `wait` (the group already reaped) ended the trap before
# the floor was stopped, and its uvicorn outlived the sitting.
trap 'kill -TERM $group 2>/dev/null || true; wait $group 2>/dev/null || true; if [ -s "$work/floor.pids" ]; then "$SHARED/floor/stop.sh" "$work/floor.pids" >/dev/null 2>&1 || true; fi; rm -rf "$work"' EXIT
for _ in $(seq 1 150); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2
done
sleep 1
pids=$(pgrep -d, -P "$group" || true)
echo "run_cortex $group, children $pids (log $work/run_cortex.log)"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--phase input_rps,fanout,sse_capacity -C 32 -T 15 -S 100 -P 3000 --post-rate 100 -K 5000)
echo "load before: $(cat /proc/loadavg)"
"$HARNESS_VENV/bin/python" "$SHARED/loadgen.py" --base-url "http://127.0.0.1:$PORT" --user-file "$work/users.txt" \
  --users 10 --max-seconds 300 --server-pids "$pids" --label cortex --out "$OUT" "${args[@]}"
kill -TERM $group 2>/dev/null; wait $group 2>/dev/null || true
[ "$FLOOR" = 1 ] || exit 0
floor_port=$((PORT + 10))
FLOOR_FRESH_DB=1 FLOOR_DB="$work/floor.sqlite3" FLOOR_LOGDIR="$work" "$SHARED/floor/run.sh" "$floor_port" "$work/floor.pids"
for _ in $(seq 1 150); do
  curl -s -o /dev/null "http://127.0.0.1:$floor_port/" 2>/dev/null && break; sleep 0.2
done
echo "load before the floor: $(cat /proc/loadavg)"
"$HARNESS_VENV/bin/python" "$SHARED/loadgen.py" --base-url "http://127.0.0.1:$floor_port" --user-file "$work/users.txt" \
  --users 10 --max-seconds 300 --server-pid-file "$work/floor.pids" --label floor --out "${OUT%.json}-floor.json" "${args[@]}"
echo "load after: $(cat /proc/loadavg)"
"$HARNESS_VENV/bin/python" - "$OUT" "${OUT%.json}-floor.json" <<'PY'
import json, sys
cortex, floor = (json.load(open(path)) for path in sys.argv[1:3])
def phase(result, name):
    for key in ("phases", "results"):
        if isinstance(result.get(key), dict) and name in result[key]:
            return result[key][name]
    return result.get(name, {})
rows = []
c, f = phase(cortex, "input_rps"), phase(floor, "input_rps")
if c and f:
    rows.append(("POST /input", f"{c['rps']:.0f} req/s, p99 {c['latency_ms']['p99']:.0f} ms",
                 f"{f['rps']:.0f} req/s, p99 {f['latency_ms']['p99']:.0f} ms",
                 f"{100 * c['rps'] / f['rps']:.1f}% of its throughput; p99 {c['latency_ms']['p99'] / f['latency_ms']['p99']:.1f}x"))
c, f = phase(cortex, "fanout"), phase(floor, "fanout")
if c and f:
    rows.append(("fan-out", f"{c['lost']} lost, p99 {c['publish_to_receive_ms']['p99']:.0f} ms",
                 f"{f['lost']} lost, p99 {f['publish_to_receive_ms']['p99']:.0f} ms",
                 f"p99 {c['publish_to_receive_ms']['p99'] / max(f['publish_to_receive_ms']['p99'], 0.1):.1f}x"))
c, f = phase(cortex, "sse_capacity"), phase(floor, "sse_capacity")
if c and f:
    ck, fk = c["bytes_per_connection"] / 1024, f["bytes_per_connection"] / 1024
    rows.append((f"idle SSE at {c.get('still_open')}", f"{ck:.1f} KB each", f"{fk:.1f} KB each", f"{ck / fk:.2f}x"))
print("| workload | Cortex | floor, same sitting | Cortex / floor |\n|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
PY
