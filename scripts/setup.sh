#!/usr/bin/env bash
# Set up from nothing: system libraries (Linux), a virtual environment, the package,
# and the offline model pack. Safe to re-run: every step is skipped when done.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus test tools and a browser for the end-to-end test
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}

apt_install() {  # Debian/Ubuntu only; elsewhere say what is missing and go on
  command -v apt-get >/dev/null || { echo "note: install $* with your package manager"; return 0; }
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

if [ "$(uname -s)" = "Linux" ]; then
  # MLX's Linux CPU wheel bundles the reference BLAS; rag loads OpenBLAS instead (rag/blas.py).
  ls /usr/lib/*/libopenblas.so.0 /usr/lib*/libopenblas.so.0 >/dev/null 2>&1 \
    || apt_install libopenblas0-pthread
  if [ "$DEV" = 1 ] && [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$DEV" = 1 ]; then .venv/bin/pip install -q -e '.[dev]'; else .venv/bin/pip install -q -e .; fi
.venv/bin/rag models pull
