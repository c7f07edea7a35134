# Shared set-up for scripts/book and scripts/test: sourced, not run. Installs what a fresh machine lacks:
# TeX Live + poppler (Debian/Ubuntu, as root or through sudo) and a virtual environment .venv with this package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tex_ok() {
  command -v xelatex >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 && command -v pdfimages >/dev/null 2>&1 &&
    kpsewhich fvextra.sty tcolorbox.sty lmodern.sty >/dev/null 2>&1 &&
    fc-list "Droid Sans Fallback" | grep -q . && fc-list Symbola | grep -q .
}
if ! tex_ok; then
  pkgs="texlive-xetex texlive-latex-extra texlive-fonts-recommended texlive-plain-generic lmodern poppler-utils fonts-dejavu-core fonts-droid-fallback fonts-symbola"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: xelatex, pdftotext or a LaTeX package is missing and this is not a Debian/Ubuntu machine." >&2
    echo "       Install TeX Live (with xelatex, fvextra, tcolorbox, lmodern) and poppler, then run this again." >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "error: installing TeX Live needs root: run 'apt-get install $pkgs' as root, then this again." >&2; exit 1
    fi
  fi
  echo ">> installing TeX Live and poppler with apt-get (about 2 minutes)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo ">> creating the virtual environment .venv"
  "$PY" -m venv .venv
fi
EXTRAS=${LLMFS_EXTRAS:-dev}            # scripts/book asks for "book" (the PDF tooling); "dev" adds the test tools to it
stamp=.venv/.llmfs-installed
want=$( (cat pyproject.toml constraints.txt; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo ">> installing llm-from-scratch-book and its dependencies into .venv (torch pinned by constraints.txt)"
  .venv/bin/python -m pip install -qq --upgrade pip
  .venv/bin/python -m pip install -qq -c constraints.txt -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
