#!/usr/bin/env bash
# Print the path of a Python >= 3.12 that actually runs (pyenv shims may exist yet fail).
# Order: $PYTHON, python3.12 / python3.13 / python3 on PATH, then pyenv's installed versions.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3.12 python3.13 python3)
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  for dir in "$root"/versions/3.1[2-9]*; do
    [ -x "$dir/bin/python3" ] && candidates+=("$dir/bin/python3")
  done
fi
for candidate in "${candidates[@]}"; do
  path=$(command -v "$candidate" 2>/dev/null) || continue
  if ok "$path"; then
    "$path" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "error: Cortex Core needs Python 3.12 or newer; none found (tried: ${candidates[*]})." >&2
echo "       Install one, or point PYTHON=/path/to/python3.12 at it." >&2
exit 1
