# Sourced by scripts/demo and scripts/test: make sure uv and the locked environment exist.
# Installs nothing outside the project: uv comes from PyPI into .tools/ when it is not on PATH,
# and the Python packages from uv.lock into .venv/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
else
  if [ ! -x "$ROOT/.tools/bin/uv" ]; then
    echo "==> Installing uv into .tools/ (first run only)"
    python3 -m venv "$ROOT/.tools"
    "$ROOT/.tools/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.9,<1"
  fi
  UV="$ROOT/.tools/bin/uv"
fi
export UV_PYTHON_DOWNLOADS=never
echo "==> Syncing the environment from uv.lock into .venv/"
"$UV" sync --frozen --python 3.11 --quiet
echo "==> Fetching the delta-spark jars with Maven (cached after the first run)"
"$UV" run --frozen --no-sync mlops-assets fetch-spark-jars
echo "==> Fetching the Kafka broker jars and building the schema registry with Maven (cached)"
"$UV" run --frozen --no-sync mlops-assets fetch-kafka-jars
"$UV" run --frozen --no-sync mlops-assets fetch-schema-registry
