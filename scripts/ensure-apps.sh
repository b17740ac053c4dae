#!/usr/bin/env bash
# Installs the applications the app tests (tests/integration/apps.rs) run through redshard,
# unmodified, from their registries: python-rq, Celery and Django from PyPI, BullMQ (with
# ioredis) from npm into tests/apps/bullmq/node_modules, Sidekiq 6 and redis-namespace from
# Debian's packages. Quiet when everything is there.
set -uo pipefail
cd "$(dirname "$0")/.."
pip_install() {
  python3 -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}
if ! python3 -c 'import rq, celery, django, packaging' 2>/dev/null; then
  echo "installing python-rq, Celery and Django for the app tests ..." >&2
  pip_install 'rq>=2,<3' 'celery[redis]>=5.3,<6' 'django>=4.2,<6' packaging || exit 1
fi
if [ ! -d tests/apps/bullmq/node_modules/bullmq ] || [ ! -d tests/apps/bullmq/node_modules/ioredis ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing BullMQ for the app tests (npm) ..." >&2
    npm install --prefix tests/apps/bullmq --no-audit --no-fund --loglevel=error >/dev/null || exit 1
  else
    echo "npm is missing: the BullMQ app test will fail (install Node.js and npm)" >&2
  fi
fi
if ! ruby -e 'require "sidekiq"; require "redis-namespace"' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Sidekiq for the app tests (Debian's ruby-sidekiq) ..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ruby-sidekiq ruby-redis-namespace; } >/dev/null || exit 1
  else
    echo "Sidekiq is missing: the Sidekiq app test will fail (apt-get install ruby-sidekiq ruby-redis-namespace)" >&2
  fi
fi
