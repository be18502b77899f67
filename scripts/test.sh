#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: fast unit tests and the slow end-to-end ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The chat page is tested in a real headless Chromium (Debian's package; no browser download).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
exec .venv/bin/python -m pytest -m "slow or not slow" -q -p no:cacheprovider "$@"
