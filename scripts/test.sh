#!/usr/bin/env bash
# Set everything up (idempotently) and run the whole test suite with real Docker, real kernel
# headers, real apt-get/dnf/gpg. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q -ra "$@"
