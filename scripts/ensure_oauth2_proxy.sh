#!/usr/bin/env bash
# Make sure .tools/bin/oauth2-proxy is the pinned oauth2-proxy release: the tests put the real
# proxy in front of a real Dagster webserver (mlops_assets_tests/test_webserver_proxy.py), the
# way deploy/compose.yaml and deploy/k8s/dagster-ui-proxy.yaml run it with the release image.
# oauth2-proxy is a Go module: built once with `go install` from the Go module proxy (about a
# minute on 2 cores; later runs find it and change nothing). Needs Go >= 1.25 on PATH (or
# /usr/local/go/bin); without it: exits 1 and says how.
set -euo pipefail

MODULE=github.com/oauth2-proxy/oauth2-proxy/v7
VERSION=v7.15.6  # keep equal to the image tag in deploy/compose.yaml and deploy/k8s
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
BINARY="$BIN_DIR/oauth2-proxy"

fail() {
  echo "ERROR: $*" >&2
  exit 1
}

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [ -x /usr/local/go/bin/go ]; then
    echo /usr/local/go/bin/go
  else
    return 1
  fi
}

built_version() {  # the module version `go install` recorded in the binary, or nothing
  local go="$1"
  [ -x "$BINARY" ] || return 0
  "$go" version -m "$BINARY" 2>/dev/null | awk -v module="$MODULE" '$1 == "mod" && $2 == module {print $3}'
}

go="$(find_go)" || fail "oauth2-proxy $VERSION is not in $BIN_DIR and there is no Go toolchain
to build it (looked on PATH and in /usr/local/go/bin). Install Go >= 1.25 (https://go.dev/doc/install,
or your distribution's golang package when recent enough) and rerun, or put an oauth2-proxy
$VERSION binary at $BINARY."

if [ "$(built_version "$go")" = "$VERSION" ]; then
  echo "==> oauth2-proxy: $BINARY ($VERSION)"
  exit 0
fi

mkdir -p "$BIN_DIR"
echo "==> oauth2-proxy $VERSION not in $BIN_DIR: building it with $("$go" version | cut -d' ' -f3) (first run only, about a minute)"
# module mode regardless of the caller's environment; the binary lands in .tools/bin only
if ! GOBIN="$BIN_DIR" GOFLAGS=-mod=mod GO111MODULE=on "$go" install "$MODULE@$VERSION"; then
  fail "'go install $MODULE@$VERSION' failed (see above): the Go module proxy must be
reachable (GOPROXY=$("$go" env GOPROXY))."
fi
[ "$(built_version "$go")" = "$VERSION" ] || fail "built $BINARY, but it does not report $MODULE $VERSION"
echo "==> oauth2-proxy: $BINARY ($VERSION)"
