#!/usr/bin/env bash
# Make sure a Chromium browser is installed: the browser tests (mlops_assets_tests/
# test_browser_ui.py) and scripts/screenshots drive it headless with Playwright for Python, which
# is given this binary (a Playwright browser download does not work on every machine).
# Found: prints where, changes nothing. Missing on Debian/Ubuntu: installs the `chromium`
# package with apt-get (as root, or with passwordless sudo). Otherwise: exits 1 and says how.
# Looks where the tests look: $MLOPS_CHROMIUM, then chromium / chromium-browser on PATH.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_debian_packages.sh"

find_chromium() {  # prints the binary, or fails
  local name
  if [ -n "${MLOPS_CHROMIUM:-}" ]; then
    [ -x "$MLOPS_CHROMIUM" ] && { echo "$MLOPS_CHROMIUM"; return 0; }
    return 1  # an explicit choice that is not executable: do not look elsewhere
  fi
  for name in chromium chromium-browser; do
    command -v "$name" >/dev/null 2>&1 && { command -v "$name"; return 0; }
  done
  return 1
}

report_found() {
  echo "==> Chromium: $1 ($("$1" --version 2>/dev/null | head -1))"
}

if binary="$(find_chromium)"; then
  report_found "$binary"
  exit 0
fi

if [ -n "${MLOPS_CHROMIUM:-}" ]; then
  fail "\$MLOPS_CHROMIUM=$MLOPS_CHROMIUM is not an executable: fix or unset it."
fi

install_debian_packages "Chromium (for the browser tests)" \
  "Install Chromium or Chrome by hand and set MLOPS_CHROMIUM to its binary." chromium

if binary="$(find_chromium)"; then
  report_found "$binary"
else
  fail "installed the chromium package, but found no chromium on PATH. Set MLOPS_CHROMIUM."
fi
