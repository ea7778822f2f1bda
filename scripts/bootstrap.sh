#!/usr/bin/env bash
# Brings a fresh Debian 12 machine to the point where `make test` and `make demo` run.
# Idempotent: every step checks first, so a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libsqlite3-mod-spatialite          # SpatiaLite for the local store and embedded server
  postgresql-15-postgis-3            # PostGIS for the server's Postgres backend
  xvfb xauth                         # a real X server for screenshots
  libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0
  libegl1 libgl1 libopengl0 libfontconfig1 libdbus-1-3 libnss3 libxcomposite1 libxdamage1
  libxrandr2 libxtst6 libxkbfile1 libasound2 fonts-dejavu-core
  chromium                           # real browser for admin-page tests
  binutils                           # objdump, which PyInstaller uses to walk shared-library deps
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Services: start them only when installed and down (the machine image usually has them up).
if command -v pg_lsclusters >/dev/null; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "bootstrap: starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  fi
fi
# TimescaleDB: development and CI machines carry a build beside the project (shared/timescaledb);
# production uses the timescale/timescaledb-ha image. Idempotent and offline; it restarts
# PostgreSQL when it installs, so wait for the server again afterwards.
if [ -f ../shared/timescaledb/install.sh ] && command -v pg_lsclusters >/dev/null; then
  if ! out=$(as_root bash ../shared/timescaledb/install.sh 2>&1); then
    echo "$out" >&2; echo "bootstrap: installing TimescaleDB failed" >&2; exit 1
  fi
  case "$out" in *"already installed"*) ;; *) echo "bootstrap: $out" | tail -n 3 ;; esac
  for _ in $(seq 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo "bootstrap: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi

# Python virtual environment, installed from the lock (requirements/dev.txt, exported from
# uv.lock by `make lock`): exact versions with hashes, so every machine gets the same bits.
# Rebuilt only when the lock or pyproject.toml changes.
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat requirements/dev.txt pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages from the lock (requirements/dev.txt)"
  # --no-deps: the lock already lists every package, so pip resolves nothing by itself.
  # pip's chatter (machine-level index warnings, setuptools' editable notice) goes to a log that
  # is shown only when something fails.
  log=.venv/bootstrap-pip.log
  if ! .venv/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps \
         -r requirements/dev.txt >"$log" 2>&1 \
     || ! .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >>"$log" 2>&1; then
    cat "$log" >&2; echo "bootstrap: installing Python packages failed (log above)" >&2; exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# Node (the machine image ships Node 20 with npm 11; Debian's npm conflicts with it, so only
# fall back to Debian's nodejs when no node is on PATH at all).
if ! command -v node >/dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# Node packages for the interop tests and the stock-server baseline.
if [ -f tests/js/package.json ]; then
  lock=tests/js/node_modules/.installed-$(sha1sum tests/js/package.json | cut -c1-12)
  if [ ! -f "$lock" ]; then
    echo "bootstrap: installing npm packages for interop tests"
    (cd tests/js && npm install --no-audit --no-fund --silent)
    rm -f tests/js/node_modules/.installed-*
    touch "$lock"
  fi
fi
