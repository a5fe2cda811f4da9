#!/usr/bin/env bash
# The test command of README's Quick start (and of .ci/run): installs the project with its test
# dependencies into .venv (if needed) and runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[cpu,test]"
# Lint first (pyflakes' checks and the 100-column line length, ruff.toml): a failure stops the run.
.venv/bin/ruff check --quiet m2m_tf data_prep launch benchmarks tests setup.py
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
