#!/usr/bin/env bash
# Make sure Prometheus, promtool, Alertmanager and amtool are installed: the alert-rule tests
# run `promtool test rules`, and the end-to-end alert test starts a real Prometheus and a real
# Alertmanager on loopback (mlops_assets_tests/monitoring_servers.py).
# Found on PATH: prints the versions, changes nothing. Missing on Debian/Ubuntu: installs the
# `prometheus` and `prometheus-alertmanager` packages with apt-get (as root, or with
# passwordless sudo). Otherwise: exits 1 and says how.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_debian_packages.sh"

BINARIES=(prometheus promtool prometheus-alertmanager amtool)

missing() {
  local name
  for name in "${BINARIES[@]}"; do
    command -v "$name" >/dev/null 2>&1 || return 0
  done
  return 1
}

if missing; then
  install_debian_packages "Prometheus and Alertmanager (${BINARIES[*]})" \
    "Install Prometheus 2.x and Alertmanager 0.25+ from https://prometheus.io/download/ and put
${BINARIES[*]} on PATH (Alertmanager's binary named prometheus-alertmanager, as Debian names it)." \
    prometheus prometheus-alertmanager
  missing && fail "installed prometheus and prometheus-alertmanager, but ${BINARIES[*]} are still not all on PATH"
fi
echo "==> Prometheus: $(prometheus --version 2>&1 | head -1); Alertmanager: $(prometheus-alertmanager --version 2>&1 | head -1)"
