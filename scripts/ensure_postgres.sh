#!/usr/bin/env bash
# Make sure the PostgreSQL *server* binaries (initdb, pg_ctl, postgres) are installed: the tests
# start a throwaway server of their own (mlops_assets_tests/postgres.py) and fail without them.
# Found: prints where, changes nothing. Missing on Debian/Ubuntu: installs the `postgresql`
# package with apt-get (as root, or with passwordless sudo). Otherwise: exits 1 and says how.
# Looks where the tests look: $PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/*/bin, PATH.
set -euo pipefail

BINARIES=(initdb pg_ctl postgres)

has_server_binaries() {  # $1: a directory
  local name
  [ -n "$1" ] || return 1
  for name in "${BINARIES[@]}"; do
    [ -x "$1/$name" ] || return 1
  done
}

find_bin_dir() {  # prints the directory, or fails
  local candidate
  if [ -n "${PG_BINDIR:-}" ]; then
    has_server_binaries "$PG_BINDIR" && { echo "$PG_BINDIR"; return 0; }
    return 1  # an explicit choice that does not hold the binaries: do not look elsewhere
  fi
  # pg_config also comes with libpq-dev alone (no server): check what it points at
  if command -v pg_config >/dev/null 2>&1; then
    candidate="$(pg_config --bindir 2>/dev/null || true)"
    has_server_binaries "$candidate" && { echo "$candidate"; return 0; }
  fi
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    has_server_binaries "$candidate" && { echo "$candidate"; return 0; }
  done
  if command -v initdb >/dev/null 2>&1; then
    candidate="$(dirname "$(readlink -f "$(command -v initdb)")")"
    has_server_binaries "$candidate" && { echo "$candidate"; return 0; }
  fi
  return 1
}

report_found() {
  echo "==> PostgreSQL server binaries: $1 ($("$1/postgres" --version))"
}

source "$(dirname "${BASH_SOURCE[0]}")/_debian_packages.sh"

if bin_dir="$(find_bin_dir)"; then
  report_found "$bin_dir"
  exit 0
fi

if [ -n "${PG_BINDIR:-}" ]; then
  fail "\$PG_BINDIR=$PG_BINDIR does not hold executable ${BINARIES[*]}: fix or unset it."
fi

install_debian_packages "PostgreSQL server binaries (${BINARIES[*]})" \
  "Install a PostgreSQL server by hand (e.g. 'dnf install postgresql-server', 'brew install
postgresql@15'), or set PG_BINDIR to the directory holding ${BINARIES[*]}." postgresql

if bin_dir="$(find_bin_dir)"; then
  report_found "$bin_dir"
else
  fail "installed the postgresql package, but still found no ${BINARIES[*]} (looked in
pg_config --bindir, /usr/lib/postgresql/*/bin and PATH). Set PG_BINDIR to their directory."
fi
