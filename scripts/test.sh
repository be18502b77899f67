#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: fast unit tests and the slow end-to-end ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -m "slow or not slow" -q -p no:cacheprovider "$@"
