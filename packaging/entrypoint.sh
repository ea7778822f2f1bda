#!/bin/sh
# Container entry point: migrate the database, then become the server (exec: it is PID 1 and
# receives SIGTERM directly, so `docker stop` shuts it down cleanly).
# Configuration comes from the environment: DATABASE_URL, REDIS_URL, WEBHOST_SECRET_KEY, PORT.
set -eu

if [ "${WEBHOST_ENV:-development}" = "production" ] && [ -z "${WEBHOST_SECRET_KEY:-}" ]; then
  echo "webhost-entrypoint: WEBHOST_SECRET_KEY is required (at least 32 characters); not starting" >&2
  exit 2
fi

webhost-server migrate
exec webhost-server serve --host 0.0.0.0 --no-migrate "$@"
