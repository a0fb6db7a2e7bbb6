#!/usr/bin/env bash
# Set up from nothing: system libraries (Linux), a virtual environment, the package,
# and the offline model pack. Safe to re-run: every step is skipped when done.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus test tools and a browser for the end-to-end test
#   scripts/setup.sh --lock   regenerate constraints.txt in a throwaway venv (`make lock`)
# Python packages come at the versions pinned in constraints.txt (pip's -c: it pins, it does
# not add). CONSTRAINTS=other.txt picks another file; CONSTRAINTS= installs unpinned.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
case "$MODE" in ""|--dev|--lock) ;; *) echo "usage: $0 [--dev|--lock]" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS-constraints.txt}

if [ "$MODE" = "--lock" ]; then
  # A fresh resolve of '.[dev]' (runtime + dev) with nothing pinned, frozen as constraints.
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  "$PY" -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q --upgrade pip
  # Only the metadata matters: build the project from a copy of pyproject.toml (and the
  # README it names), so nothing is written into this checkout.
  mkdir "$tmp/project" && cp pyproject.toml README.md "$tmp/project/"
  "$tmp/venv/bin/pip" install -q "$tmp/project[dev]"
  "$tmp/venv/bin/pip" check
  py_version=$("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')
  {
    cat <<EOF
# Lock for scripts/setup.sh: pip constraints (pip install -c constraints.txt -e '.[dev]').
# Regenerate with \`make lock\` (scripts/setup.sh --lock): a fresh venv resolves '.[dev]' from
# pyproject.toml with nothing pinned and \`pip freeze\` writes this file; commit it together
# with the pyproject.toml change that needed it. Do not edit by hand.
#
# Resolved on $(uname -s) $(uname -m), CPython ${py_version}. A constraint only pins a package
# that something requests; pins for packages not requested on another platform are ignored,
# so macOS still installs (mlx instead of mlx[cpu], so no mlx-cpu; mlx-metal comes unpinned).
# On another Python, where a pin may have no wheel: CONSTRAINTS= scripts/setup.sh (unpinned).
# Not covered: the cuda extra, and setuptools (the build backend runs in pip's build isolation).
EOF
    "$tmp/venv/bin/pip" freeze --all --exclude rag-local --exclude setuptools --exclude wheel
  } > "$CONSTRAINTS.new"
  mv "$CONSTRAINTS.new" "$CONSTRAINTS"
  echo "wrote $CONSTRAINTS ($(grep -vc '^#' "$CONSTRAINTS") pins)"
  exit 0
fi

DEV=0; [ "$MODE" = "--dev" ] && DEV=1

apt_install() {  # Debian/Ubuntu only; elsewhere say what is missing and go on
  command -v apt-get >/dev/null || { echo "note: install $* with your package manager"; return 0; }
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

ocr_ready() {  # tesseract and every pack OCR is set up with
  local have
  have=$(tesseract --list-langs 2>/dev/null) || return 1
  for lang in osd eng chi_sim chi_tra tha ara hin; do
    grep -qx "$lang" <<<"$have" || return 1
  done
}

if [ "$(uname -s)" = "Linux" ]; then
  # MLX's Linux CPU wheel bundles the reference BLAS; rag loads OpenBLAS instead (rag/blas.py).
  ls /usr/lib/*/libopenblas.so.0 /usr/lib*/libopenblas.so.0 >/dev/null 2>&1 \
    || apt_install libopenblas0-pthread
  if [ "$DEV" = 1 ] && [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
  # OCR of scanned PDF pages (ingest/ocr.py): Tesseract, its script detection (osd) and the
  # language packs of the scripts the project reads.
  ocr_ready || apt_install tesseract-ocr tesseract-ocr-osd tesseract-ocr-eng \
    tesseract-ocr-chi-sim tesseract-ocr-chi-tra tesseract-ocr-tha tesseract-ocr-ara \
    tesseract-ocr-hin
  # tests/test_ocr.py prints Chinese, Thai, Arabic and Hindi pages with Noto fonts.
  if [ "$DEV" = 1 ] && ! ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc \
      /usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf >/dev/null 2>&1; then
    apt_install fonts-noto-core fonts-noto-cjk
  fi
elif [ "$(uname -s)" = "Darwin" ] && command -v brew >/dev/null; then
  ocr_ready || brew install tesseract tesseract-lang
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv

# pip runs only when pyproject.toml, the constraints or the mode changed since the last
# successful install (a stamp in .venv records them); a dev install also covers runtime.
pin=(); [ -n "$CONSTRAINTS" ] && pin=(-c "$CONSTRAINTS")  # ${pin[@]+...}: bash 3.2 on macOS
fingerprint=$(cat pyproject.toml ${CONSTRAINTS:+"$CONSTRAINTS"} | .venv/bin/python -c \
  'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
installed() { [ "$(cat ".venv/.setup-$1" 2>/dev/null)" = "$fingerprint" ]; }
if installed dev || { [ "$DEV" = 0 ] && installed runtime; }; then
  echo "packages: up to date with pyproject.toml${CONSTRAINTS:+ and $CONSTRAINTS}"
else
  rm -f .venv/.setup-dev .venv/.setup-runtime
  .venv/bin/python -m pip install -q ${pin[@]+"${pin[@]}"} --upgrade pip
  if [ "$DEV" = 1 ]; then
    .venv/bin/pip install -q ${pin[@]+"${pin[@]}"} -e '.[dev]'
    echo "$fingerprint" > .venv/.setup-dev
  else
    .venv/bin/pip install -q ${pin[@]+"${pin[@]}"} -e .
  fi
  echo "$fingerprint" > .venv/.setup-runtime
fi
# tests/test_azure.py: Azurite, Azure Storage's own emulator (npm), for az:// stores.
if [ "$DEV" = 1 ] && [ ! -x .venv/azurite/node_modules/.bin/azurite-blob ]; then
  command -v npm >/dev/null || apt_install nodejs npm
  if command -v npm >/dev/null; then
    npm install --silent --no-audit --no-fund --prefix .venv/azurite azurite@3.37.0
  fi
fi
.venv/bin/rag models pull
