#!/bin/sh
# Many more kill -9 trials than the test suite runs (default 200; the suite runs 20).
# usage: tests/bench/crash_trials.sh [TRIALS] [SEED]
cd "$(dirname "$0")/../.." || exit 1
TUSSERVER_CRASH_TRIALS="${1:-200}" TUSSERVER_CRASH_SEED="${2:-}" \
    exec .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/test_crash.py
