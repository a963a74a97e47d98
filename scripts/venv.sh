#!/usr/bin/env bash
# Creates (or reuses) the project-local Python venv with the pinned servers the
# tests (Radicale, Xandikos, moto) and scripts/demo (Radicale) need.
# Idempotent: a venv whose recorded pins match scripts/requirements.txt is
# reused as is (no network), so CI can cache the directory between runs;
# pip's download cache (~/.cache/pip) is reused when the venv is rebuilt.
#
# VENV_DIR overrides the location (default: <repo>/.venv). The name has no
# CALATTACH_ prefix on purpose: calattach reads every CALATTACH_* variable
# as a config override.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV_DIR:-$PWD/.venv}"
PINS="scripts/requirements.txt"
if [ -x "$VENV/bin/python" ] && cmp -s "$PINS" "$VENV/.pins" 2>/dev/null; then
  exit 0
fi
command -v python3 >/dev/null || { echo "venv.sh: python3 not found (Python 3.9+ is required)" >&2; exit 1; }
echo "setting up Python venv in $VENV (pinned: $PINS)" >&2
if ! python3 -m venv "$VENV"; then
  echo "venv.sh: 'python3 -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
  exit 1
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PINS"
# Recorded last: an interrupted install is redone on the next run.
cp "$PINS" "$VENV/.pins"
