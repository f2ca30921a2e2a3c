# Sourced by the ensure_*.sh scripts: install Debian packages the tests need, as root or with
# passwordless sudo, or fail with what to run by hand.
# install_debian_packages "<what they are>" "<hint when not Debian>" package...

fail() {
  echo "ERROR: $*" >&2
  exit 1
}

install_debian_packages() {
  local what="$1" elsewhere="$2"
  shift 2
  local packages=("$@") as_root install
  if [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
    fail "$what not found, and this is not a Debian/Ubuntu machine with apt-get, so they cannot
be installed automatically. $elsewhere"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    as_root=(env DEBIAN_FRONTEND=noninteractive)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)
  else
    fail "$what not found, and installing them needs root: run
'sudo apt-get install -y --no-install-recommends ${packages[*]}' (or rerun this script as root,
or with passwordless sudo). $elsewhere"
  fi
  install=(apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold "${packages[@]}")
  echo "==> $what not found: installing them (first run only)"
  echo "    ${as_root[*]} apt-get update -qq"
  "${as_root[@]}" apt-get update -qq || echo "WARNING: apt-get update failed; trying the install anyway" >&2
  echo "    ${as_root[*]} ${install[*]}"
  if ! "${as_root[@]}" "${install[@]}"; then
    fail "'apt-get install ${packages[*]}' failed (see above). $elsewhere"
  fi
}
