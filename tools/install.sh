#!/usr/bin/env bash
# Installs everything most_speech needs: the Debian packages the recipes use (espeak-ng, flite, sox,
# libsndfile, ffmpeg) and the pinned Python packages, then most_speech itself in editable mode.
# Usage: bash tools/install.sh            (from the repository root; re-running is cheap)
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES="espeak-ng flite sox libsndfile1 ffmpeg"
missing=""
for p in $DEB_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=" $p"
done
if [[ -n "$missing" ]]; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "[install] Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

PY=${PYTHON:-python3}
echo "[install] Python packages (requirements-dev.txt)"
$PY -m pip install -q -r requirements-dev.txt
$PY -m pip install -q --no-deps --no-build-isolation -e .
echo "[install] done: run the tests with  python3 -m pytest"
