#!/usr/bin/env bash
# Refreshes uv.lock from pyproject.toml and exports the hashed requirement files every install
# uses (bootstrap, the container, the desktop bundle); see docs/dependencies.md.
#   scripts/lock.sh            pins move only where pyproject.toml demands (make lock)
#   scripts/lock.sh --upgrade  every package to its newest allowed release (make upgrade)
#   scripts/lock.sh --check    offline: fail when the lock, the exports and pyproject.toml disagree
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
[ -x "$UV" ] || UV=uv

# name of the exported file, then the `uv export` arguments that select its packages
EXPORTS=(
  "dev.txt|--extra dev"              # development, tests and `make bundle`
  "server.txt|--only-group server"   # the container: no Qt, no folium
  "desktop.txt|--group bundle"       # the desktop bundle built on another machine
)

export_into() {
  local folder=$1 entry name args
  for entry in "${EXPORTS[@]}"; do
    name=${entry%%|*}; args=${entry#*|}
    # shellcheck disable=SC2086  # args is a list of flags
    "$UV" export --frozen --offline --no-emit-project --no-header --format requirements-txt $args \
      | sed '1i # Generated from uv.lock by scripts/lock.sh (make lock); do not edit.' > "$folder/$name"
  done
}

if [ "${1:-}" = --check ]; then
  "$UV" lock --check --offline --quiet \
    || { echo "lock: uv.lock does not match pyproject.toml; run make lock" >&2; exit 1; }
  fresh=$(mktemp -d); trap 'rm -rf "$fresh"' EXIT
  export_into "$fresh"
  diff -ru requirements "$fresh" >&2 \
    || { echo "lock: requirements/ is not what uv.lock exports; run make lock" >&2; exit 1; }
  echo "lock: uv.lock, requirements/ and pyproject.toml agree"
  exit 0
fi

"$UV" lock "$@"
export_into requirements
echo "lock: uv.lock and requirements/{dev,server,desktop}.txt are up to date"
