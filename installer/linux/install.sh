#!/usr/bin/env bash
# Install the standalone HemaLens (this folder) for one user or for all users; or remove it.
#
#   ./install.sh              for you:      ~/.local/opt/hemalens, ~/.local/bin/hemalens,
#                                           ~/.local/share/applications, ~/.local/share/icons
#   sudo ./install.sh --system  for all:    /opt/hemalens, /usr/local/bin/hemalens,
#                                           /usr/share/applications, /usr/share/icons
#   ./install.sh --uninstall [--system]     removes exactly those; user data
#                                           (~/.local/share/HemaLens, ~/.config/HemaLens) stays
# --root DIR puts everything under DIR (staging for a package, or a test).
set -euo pipefail

MODE=user ACTION=install ROOT=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --user) MODE=user ;;
    --system) MODE=system ;;
    --uninstall) ACTION=uninstall ;;
    --root) ROOT=${2:?--root needs a folder}; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $MODE == system ]]; then
  APP_DIR=/opt/hemalens BIN_DIR=/usr/local/bin DATA_DIR=/usr/share
else
  APP_DIR=$HOME/.local/opt/hemalens BIN_DIR=$HOME/.local/bin
  DATA_DIR=${XDG_DATA_HOME:-$HOME/.local/share}
fi
DESKTOP=$DATA_DIR/applications/hemalens.desktop
ICON_PNG=$DATA_DIR/icons/hicolor/256x256/apps/hemalens.png
ICON_SVG=$DATA_DIR/icons/hicolor/scalable/apps/hemalens.svg

refresh() {  # menus and icon caches; absent tools are fine
  command -v update-desktop-database >/dev/null && \
    update-desktop-database -q "$ROOT$DATA_DIR/applications" 2>/dev/null || true
  command -v gtk-update-icon-cache >/dev/null && \
    gtk-update-icon-cache -q -t "$ROOT$DATA_DIR/icons/hicolor" 2>/dev/null || true
}

if [[ $ACTION == uninstall ]]; then
  if [[ -e "$ROOT$APP_DIR" && ! -x "$ROOT$APP_DIR/hemalens" ]]; then
    echo "install.sh: $ROOT$APP_DIR: not a HemaLens installation; nothing removed" >&2
    exit 1
  fi
  rm -rf "$ROOT$APP_DIR"
  rm -f "$ROOT$DESKTOP" "$ROOT$ICON_PNG" "$ROOT$ICON_SVG"
  if [[ -L "$ROOT$BIN_DIR/hemalens" ]]; then rm -f "$ROOT$BIN_DIR/hemalens"; fi
  refresh
  echo "HemaLens removed ($MODE). Projects and settings were kept."
  exit 0
fi

SRC=$(cd "$(dirname "$0")" && pwd)
if [[ ! -x "$SRC/hemalens" || ! -d "$SRC/_internal" ]]; then
  echo "install.sh: $SRC: run me from the built HemaLens folder (dist/<variant>/hemalens)" >&2
  exit 1
fi
if [[ "$SRC" == "$ROOT$APP_DIR" ]]; then
  echo "install.sh: $SRC is already the installed copy" >&2
  exit 1
fi
# copy beside, then swap: a failed copy leaves any earlier installation untouched
mkdir -p "$(dirname "$ROOT$APP_DIR")"
STAGE=$(mktemp -d "$ROOT$APP_DIR.new.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
cp -a "$SRC/." "$STAGE/"
chmod 755 "$STAGE"
rm -rf "$ROOT$APP_DIR.old"
if [[ -e "$ROOT$APP_DIR" ]]; then mv "$ROOT$APP_DIR" "$ROOT$APP_DIR.old"; fi
mv "$STAGE" "$ROOT$APP_DIR"
trap - EXIT
rm -rf "$ROOT$APP_DIR.old"

mkdir -p "$ROOT$BIN_DIR" "$(dirname "$ROOT$DESKTOP")" "$(dirname "$ROOT$ICON_PNG")" \
         "$(dirname "$ROOT$ICON_SVG")"
ln -sfn "$APP_DIR/hemalens" "$ROOT$BIN_DIR/hemalens"
install -m 644 "$SRC/hemalens.png" "$ROOT$ICON_PNG"
install -m 644 "$SRC/hemalens.svg" "$ROOT$ICON_SVG"
# the launcher names the installed program by its full path: menus do not read ~/.local/bin
sed -e "s|^Exec=hemalens|Exec=$APP_DIR/hemalens|" -e "s|^TryExec=hemalens|TryExec=$APP_DIR/hemalens|" \
  "$SRC/hemalens.desktop" > "$ROOT$DESKTOP"
chmod 644 "$ROOT$DESKTOP"
refresh
echo "HemaLens installed ($MODE) in $APP_DIR; start it from the menu or with: $BIN_DIR/hemalens"
