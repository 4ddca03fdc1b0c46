#!/usr/bin/env bash
# Build the standalone one-folder HemaLens on Linux.
#
#   installer/build.sh [cpu|gpu]      -> dist/<variant>/hemalens/hemalens
#
# Creates its own build venv (build/venv-<variant>; never touches .venv), installs
# PyInstaller, torch and HemaLens (not editable) into it, then runs installer/hemalens.spec.
# The venv is reused while pyproject.toml and the torch choice are unchanged.
#
#   cpu (default)  torch CPU build (no CUDA libraries).     TORCH_SPEC="torch==2.13.0"
#   gpu            PyPI's CUDA torch + torchvision + nvidia-* libraries.
#                                                       TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
# Environment: PYTHON (python3.11+, default python3), TORCH_SPEC, PIP_EXTRA (extra pip
# options for the torch install, e.g. "--extra-index-url https://download.pytorch.org/whl/cpu":
# plain PyPI's Linux torch is the CUDA build, which the CPU spec refuses; our build machine
# has the CPU wheel on disk), ARCHIVE=1 (also write
# dist/hemalens-<version>-linux-<arch>-<variant>.tar.gz).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VARIANT=${1:-${HEMALENS_BUILD_VARIANT:-cpu}}
case "$VARIANT" in
  cpu) TORCH_SPEC=${TORCH_SPEC:-"torch==2.13.0"} ;;
  gpu) TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"} ;;
  *) echo "build.sh: variant must be cpu or gpu, not '$VARIANT'" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
PIP_EXTRA=${PIP_EXTRA:-}
VENV="$ROOT/build/venv-$VARIANT"
PY="$VENV/bin/python"
STAMP="$VENV/.hemalens-build-stamp"
WANT=$(cat "$ROOT/pyproject.toml" <(echo "$TORCH_SPEC $PIP_EXTRA") | sha256sum | cut -c1-16)

if [[ ! -x "$PY" ]]; then
  echo "build.sh: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "build.sh: installing PyInstaller, $TORCH_SPEC and HemaLens into $VENV" >&2
  # torch first, so that the project's 'torch>=...' is already met by the chosen build
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet $PIP_EXTRA $TORCH_SPEC 'pyinstaller>=6.10'
  # the project's dependencies without torch/torchvision (a CPU torch has no matching
  # torchvision on PyPI: pip would otherwise replace it with the CUDA build)
  mapfile -t DEPS < <("$PY" - "$ROOT/pyproject.toml" <<'PYEOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
for d in deps:
    if re.split(r"[<>=!~ ;\[]", d)[0].lower() not in ("torch", "torchvision"):
        print(d)
PYEOF
)
  "$PY" -m pip install --quiet "${DEPS[@]}"
  echo "$WANT" > "$STAMP"
fi
# HemaLens itself, always fresh (not editable: PyInstaller must see the package files)
"$PY" -m pip install --quiet --no-deps --force-reinstall --no-build-isolation "$ROOT" \
  || "$PY" -m pip install --quiet --no-deps --force-reinstall "$ROOT"

HEMALENS_BUILD_VARIANT="$VARIANT" "$PY" -m PyInstaller --noconfirm --log-level WARN \
  --workpath "$ROOT/build/pyinstaller-$VARIANT" --distpath "$ROOT/dist/$VARIANT" \
  "$ROOT/installer/hemalens.spec"

APP="$ROOT/dist/$VARIANT/hemalens"
cp "$ROOT/installer/linux/install.sh" "$APP/install.sh"
cp "$ROOT/resources/hemalens.desktop" "$ROOT/resources/hemalens.png" \
   "$ROOT/resources/hemalens.svg" "$APP/"
"$APP/hemalens" --version
du -sh "$APP"

if [[ "${ARCHIVE:-0}" == 1 ]]; then
  VERSION=$("$APP/hemalens" --version | awk '{print $2}')
  TAR="$ROOT/dist/hemalens-$VERSION-linux-$(uname -m)-$VARIANT.tar.gz"
  tar -C "$ROOT/dist/$VARIANT" -czf "$TAR" hemalens
  echo "build.sh: wrote $TAR" >&2
fi
