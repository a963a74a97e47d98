#!/usr/bin/env bash
# Creates (or reuses) the project-local Python venv with the pinned servers the
# tests need (scripts/requirements.txt: Radicale, Xandikos, moto, SeaweedFS,
# PyYAML; about 500 MB, most of it SeaweedFS's binary).
#
# `scripts/venv.sh --demo` installs only what scripts/demo runs: Radicale, at
# its pin in scripts/requirements.txt (a few MB).
#
# Idempotent: a venv whose recorded pins match is reused as is (no network), so
# CI can cache the directory between runs; pip's download cache (~/.cache/pip)
# is reused when the venv is rebuilt. A venv with the full test set also serves
# the demo.
#
# VENV_DIR overrides the location (default: <repo>/.venv). The name has no
# CALATTACH_ prefix on purpose: calattach reads every CALATTACH_* variable
# as a config override.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV_DIR:-$PWD/.venv}"
PINS="scripts/requirements.txt"
full_ok() { [ -x "$VENV/bin/python" ] && cmp -s "$PINS" "$VENV/.pins" 2>/dev/null; }

if [ "${1:-}" = "--demo" ]; then
  WANT="$(grep -E '^radicale==' "$PINS")"
  STAMP="$VENV/.pins-demo"
  if full_ok || { [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; }; then
    exit 0
  fi
else
  WANT=""
  STAMP="$VENV/.pins"
  full_ok && exit 0
fi

command -v python3 >/dev/null || { echo "venv.sh: python3 not found (Python 3.9+ is required)" >&2; exit 1; }
echo "setting up Python venv in $VENV (${WANT:-pinned: $PINS})" >&2
if ! python3 -m venv "$VENV"; then
  echo "venv.sh: 'python3 -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
  exit 1
fi
if [ -n "$WANT" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$WANT"
  echo "$WANT" > "$STAMP"
else
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PINS"
  # Recorded last: an interrupted install is redone on the next run.
  cp "$PINS" "$STAMP"
fi
